"""The agent's side of the fleet link (``docs/uplink.md``): enrollment and the uplink client.

* :mod:`.enroll` -- ``keyvault agent enroll``: pin check, CSR, files under ``<data_dir>/uplink``.
* :mod:`.state` -- those files (written atomically, ``state.json`` last) and the key/certificate.
* :mod:`.service` -- started by ``keyvault agent run``: waits for enrollment, dials with backoff
  (:mod:`.backoff`), stops for good on revocation or an expired certificate.
* :mod:`.connection` -- one WebSocket: hello/welcome, heartbeats (:mod:`.health`), the two event
  streams (:mod:`.outbox`, :mod:`.inventory`, :mod:`.audit_stream`), commands
  (:mod:`.commands`), certificate renewal (:mod:`.renewal`).

Nothing here ever sends a secret value, key, token or plaintext secret name.
"""

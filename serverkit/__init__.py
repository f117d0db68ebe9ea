"""What both aiohttp servers (agent API, control plane) do at the edge of a request.

``serverkit.body`` reads strict JSON bodies and query parameters; ``serverkit.edge`` turns every
error into the one JSON error shape. It may import ``common`` and aiohttp; ``agent`` and
``control_plane`` import it, ``common``, ``apps`` and ``k8s_operator`` never do.
"""

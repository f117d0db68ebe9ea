"""Services: the control plane's operations, independent of HTTP."""

"""Files rendered from templates that follow secret changes (issue 17, ``docs/workloads.md``).

``sandbox.py`` is the template language (Jinja2's sandbox with strict undefined, bounded output,
size and time), ``files.py`` the atomic replace of a rendered file, ``service.py`` the running
service: first render at start, re-render after a change to a secret a template used, reload
command or signal, alerts on failure.
"""

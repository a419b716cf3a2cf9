"""Drivers that run inside a peer tool's own venv (langbench.run.peers): each imports only the
tool and the standard library, calls the tool's own benchmark entry, and writes its result as
the tool returned it. langbench never imports them."""

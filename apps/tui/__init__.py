"""The operators' terminal dashboard (Textual): a thin skin over the view models in ``apps.core``."""

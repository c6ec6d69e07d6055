"""No models: pageq keeps its own schema (``manage.py migrate`` applies it; see apps.py). This module lets
Django send this app the post_migrate signal."""

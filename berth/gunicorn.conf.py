"""gunicorn settings for `make run`; the bind address comes from BERTH_LISTEN."""

import os

_listen = os.environ.get("BERTH_LISTEN", "127.0.0.1:8000")
bind = [_listen]
workers = int(os.environ.get("BERTH_WEB_WORKERS", "2"))
threads = 4
timeout = 120
accesslog = "-"
wsgi_app = "berth.wsgi:application"

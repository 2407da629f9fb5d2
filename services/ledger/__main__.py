import sys

from .worker import service, supervision

service.run()
sys.exit(1 if supervision.failure else 0)

from .worker import service

service.run()

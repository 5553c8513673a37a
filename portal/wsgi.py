import os

from django.core.wsgi import get_wsgi_application

from portal.datadir import data_dir_ensure

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
data_dir_ensure()
application = get_wsgi_application()

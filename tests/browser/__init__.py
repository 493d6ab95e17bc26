"""Browser tests: the admin in headless Chromium (Debian's ``chromium`` + ``chromium-driver``),
driven by Selenium against pytest-django's live server. Fixtures in ``conftest.py``, helpers in
``helpers.py``; ``screenshots.py`` is ``make screenshots``."""

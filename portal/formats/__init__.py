"""The pages' date formats per language (FORMAT_MODULE_PATH): templates name a format
(DATETIME_FORMAT with seconds, SHORT_DATETIME_FORMAT without, DATE_FORMAT), the language
picks how it reads. English keeps ISO 8601's order, as the API and the exports write it."""

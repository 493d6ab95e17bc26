"""The static TOML configuration: loader (load, validate, apply), checks of single values,
sections (storage, target and notifier tables) and the registry of sections other apps add."""

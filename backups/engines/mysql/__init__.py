"""The MySQL and MariaDB engines (engine) with their settings, catalog reads and dump format."""

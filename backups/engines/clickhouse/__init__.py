"""The ClickHouse engine (engine): the client, catalog reads, SQL rewriting, the tar archive, Native
blocks and the restore order, each in its own module."""

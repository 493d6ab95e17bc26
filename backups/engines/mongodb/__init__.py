"""The MongoDB engine (engine) with its settings, the mongodump archive reader and BSON checks."""

"""The suppression list: addresses and their keys, export-file readers, imports, the watched folder, the store."""

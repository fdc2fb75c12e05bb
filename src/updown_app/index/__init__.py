"""The signed (TUF) index of published public files: keys, the repository the service maintains, verification."""

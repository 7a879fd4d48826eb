"""The vendor flow: patch sets (make, read), the history, encryption, FlagScale's older layout."""

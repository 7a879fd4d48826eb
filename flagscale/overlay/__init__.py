"""The developer flow: the base layer laid over upstream checkouts, and edits written back."""

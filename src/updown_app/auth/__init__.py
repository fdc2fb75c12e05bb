"""Who may do what: HMAC-signed store requests (``signed_requests``) and the private-download hook (``private``)."""

"""XEP-0363 HTTP file upload on upload.<domain> (service.py), served over HTTPS (http.py)."""

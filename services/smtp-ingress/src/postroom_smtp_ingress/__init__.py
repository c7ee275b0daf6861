"""Postroom smtp-ingress: business mail in over SMTP, `mail.received` events out."""

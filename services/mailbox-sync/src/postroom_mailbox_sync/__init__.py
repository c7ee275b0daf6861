"""mailbox-sync: mail from existing mailboxes (IMAP, provider push, inbound parse) into Postroom."""

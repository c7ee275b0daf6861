-- Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d).
-- One database per service: a service owns its tables and nobody else's.
CREATE DATABASE smtp_ingress OWNER postroom;
CREATE DATABASE attachment_extractor OWNER postroom;
CREATE DATABASE transcriber OWNER postroom;
CREATE DATABASE mailer OWNER postroom;
CREATE DATABASE classifier OWNER postroom;
CREATE DATABASE ai_responder OWNER postroom;
CREATE DATABASE console OWNER postroom;
CREATE DATABASE mailbox_sync OWNER postroom;

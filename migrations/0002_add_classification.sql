-- What the classifier saw besides its decision: the protection class
-- (e.g. 'pgp-encrypted', 'smime-signed', 'none') and the private relay the
-- customer writes through, with the relay address and the reply token.
ALTER TABLE messages ADD COLUMN class TEXT;
ALTER TABLE messages ADD COLUMN relay TEXT;
ALTER TABLE messages ADD COLUMN relay_alias TEXT;
ALTER TABLE messages ADD COLUMN reply_token TEXT;

CREATE INDEX messages_by_relay_alias ON messages (relay_alias) WHERE relay_alias IS NOT NULL;

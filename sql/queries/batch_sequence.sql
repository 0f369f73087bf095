-- $1 new event sequence numbers, increasing, for the postings of a batch.
SELECT nextval('wallet.events_seq_seq') FROM generate_series(1, $1)

-- Point in time: balance_at (after a sequence number), balance_at_time, statement_between.
\set VERBOSITY terse
SELECT wallet.create_currency('HUF') AS huf_system \gset
SELECT max(seq) AS before_open FROM wallet.events \gset
SELECT wallet.open_account('HUF', 'rosa') AS rosa \gset
SELECT wallet.open_account('HUF', 'sven') AS sven \gset
SELECT wallet.deposit(:rosa, 1000) AS s1 \gset
SELECT clock_timestamp() AS t1 \gset
SELECT pg_sleep(0.01);
SELECT wallet.transfer(:rosa, :sven, 300) AS s2 \gset
SELECT wallet.transfer(:sven, :rosa, 100) AS s3 \gset
SELECT clock_timestamp() AS t3 \gset

SELECT wallet.balance_at(:rosa, :before_open) AS not_yet_opened,
       wallet.balance_at(:rosa, :s1 - 1) AS opened_empty,
       wallet.balance_at(:rosa, :s1) AS after_s1,
       wallet.balance_at(:rosa, :s2) AS after_s2,
       wallet.balance_at(:rosa, :s3) AS after_s3,
       wallet.balance_at(:sven, :s2) AS sven_after_s2;
SELECT wallet.balance_at_time(:rosa, :'t1') AS rosa_at_t1,
       wallet.balance_at_time(:rosa, :'t3') AS rosa_at_t3,
       wallet.balance_at_time(:rosa, '2000-01-01') AS before_everything;
SELECT seq = :s2 AS is_s2, amount, balance FROM wallet.statement_between(:rosa, :s1, :s2);
SELECT wallet.balance_at(424242, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.balance_at(:rosa, NULL);
\echo :LAST_ERROR_SQLSTATE

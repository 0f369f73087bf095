-- Idempotency keys: a repeat with the same parameters returns the first answer and changes
-- nothing; the same key with different parameters is refused (WA009).
\set VERBOSITY terse
SELECT wallet.create_currency('CHF') AS chf_system \gset
SELECT wallet.open_account('CHF', 'gina') AS gina \gset
SELECT wallet.open_account('CHF', 'hank') AS hank \gset
SELECT wallet.deposit(:gina, 1000, 'chf-topup-1') AS topup \gset
SELECT wallet.deposit(:gina, 1000, 'chf-topup-1') = :topup AS same_answer;
SELECT wallet.transfer(:gina, :hank, 300, 'pay-1', '{"order": 1}') AS pay \gset
SELECT wallet.transfer(:gina, :hank, 300, 'pay-1', '{"order": 1}') = :pay AS same_answer;
SELECT wallet.balance(:gina) AS gina, wallet.balance(:hank) AS hank;
SELECT count(*) AS events_with_key FROM wallet.events WHERE idempotency_key IN ('chf-topup-1', 'pay-1');

-- A retry is answered even when the accounts changed since: the effect already happened.
SELECT wallet.freeze_account(:gina);
SELECT wallet.transfer(:gina, :hank, 300, 'pay-1', '{"order": 1}') = :pay AS same_answer_while_frozen;
SELECT wallet.unfreeze_account(:gina);

-- Same key, different parameters: amount, direction, metadata.
SELECT wallet.transfer(:gina, :hank, 301, 'pay-1', '{"order": 1}');
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.transfer(:hank, :gina, 300, 'pay-1', '{"order": 1}');
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.transfer(:gina, :hank, 300, 'pay-1');
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.withdraw(:gina, 1000, 'chf-topup-1');
\echo :LAST_ERROR_SQLSTATE
-- Keys are 1 to 128 bytes.
SELECT wallet.transfer(:gina, :hank, 1, '');
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.transfer(:gina, :hank, 1, repeat('k', 129));
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.transfer(:gina, :hank, 1, repeat('k', 128)) > 0 AS longest_key_ok;
-- A failed keyed call does not use up its key.
SELECT wallet.transfer(:hank, :gina, 100000, 'pay-2');
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.transfer(:hank, :gina, 100, 'pay-2') > 0 AS key_still_free;
SELECT wallet.balance(:gina) AS gina, wallet.balance(:hank) AS hank;
SELECT * FROM wallet.verify();

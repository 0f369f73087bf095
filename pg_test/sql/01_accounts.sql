-- Currencies and accounts: create_currency, open_account, get_account, list_accounts,
-- freeze_account, unfreeze_account, close_account, balance.
\set VERBOSITY terse
SELECT wallet.create_currency('EUR') AS eur_system \gset
SELECT wallet.create_currency('JPY', 0) AS jpy_system \gset
SELECT code, scale, system_account_id = :eur_system AS is_eur_system FROM wallet.currencies ORDER BY code;
-- The system account may go negative: money enters the wallet by debiting it.
SELECT id, currency, owner, status, allow_overdraft, is_system, balance
  FROM wallet.get_account(:eur_system);

-- Currency rejections
SELECT wallet.create_currency('EUR');
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.create_currency('eur');
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.create_currency('EURO-1');
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.create_currency('BTC', 19);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.create_currency(NULL);
\echo :LAST_ERROR_SQLSTATE

-- Opening accounts
SELECT wallet.open_account('EUR', 'alice', '{"tier": "gold"}') AS alice \gset
SELECT wallet.open_account('EUR', 'alice') AS alice2 \gset
SELECT wallet.open_account('JPY', 'bob') AS bob_jpy \gset
SELECT wallet.open_account('EUR', 'merchant', allow_overdraft => true) AS merchant \gset
SELECT id = :alice AS is_alice, currency, owner, metadata, status, allow_overdraft, is_system,
       balance, pending_debit, pending_credit
  FROM wallet.get_account(:alice);
SELECT owner, currency, status FROM wallet.list_accounts(owner => 'alice');
SELECT owner, currency FROM wallet.list_accounts(currency => 'JPY');
-- keyset paging: after_id and max_rows
SELECT count(*) AS first_page FROM wallet.list_accounts(currency => 'EUR', max_rows => 2);
SELECT count(*) AS after_alice FROM wallet.list_accounts(currency => 'EUR', after_id => :alice);

-- Account rejections
SELECT wallet.open_account('XYZ');
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.open_account('EUR', 'x', '[1, 2]');
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.open_account('EUR', repeat('o', 201));
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.open_account('EUR', 'x', jsonb_build_object('blob', repeat('b', 5000)));
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.get_account(424242);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.balance(424242);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM wallet.list_accounts(max_rows => 0);
\echo :LAST_ERROR_SQLSTATE

-- Status: active <-> frozen, then closed (only when empty). Repeats change nothing.
SELECT wallet.freeze_account(:alice2) AS changed;
SELECT wallet.freeze_account(:alice2) AS changed_again;
SELECT status FROM wallet.get_account(:alice2);
SELECT wallet.unfreeze_account(:alice2) AS changed;
SELECT wallet.close_account(:alice2) AS changed;
SELECT wallet.close_account(:alice2) AS changed_again;
SELECT wallet.unfreeze_account(:alice2);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.freeze_account(:alice2);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.freeze_account(:eur_system);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.close_account(:eur_system);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.deposit(:alice, 100) > 0 AS deposited;
SELECT wallet.close_account(:alice);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.freeze_account(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.freeze_account(424242);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.balance(:alice) AS alice_balance;
-- Every change above is an event (rejected calls wrote none).
SELECT event_type, count(*) FROM wallet.events GROUP BY event_type ORDER BY event_type;

-- The SQL API of wallet_ext. Functions that write are C functions (src/api.rs) running as the
-- extension owner (SECURITY DEFINER) with a pinned search_path; ordinary roles cannot write the
-- tables, so these functions are the only way money moves. Reading functions run as the caller,
-- who needs wallet_reader (or wallet_operator, which includes it).
-- Every rejection raises a SQLSTATE of class WA; see README.md for the table.

-- ---- currencies and accounts -----------------------------------------------------------------

CREATE FUNCTION wallet.create_currency(code text, scale integer DEFAULT 2)
RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_create_currency';
COMMENT ON FUNCTION wallet.create_currency(text, integer) IS
    'Creates a currency (3-8 chars A-Z/0-9, minor-unit scale 0-18) and its system account; returns the system account id.';

CREATE FUNCTION wallet.spread_settlement(currency text, accounts integer)
RETURNS bigint[]
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_spread_settlement';
COMMENT ON FUNCTION wallet.spread_settlement(text, integer) IS
    'Spreads the currency''s cross-node settlement over this many system accounts in all (1-64, never fewer than it has), opening the further ones; returns them, the system account first.';

CREATE FUNCTION wallet.open_account(currency text, owner text DEFAULT NULL,
                                    metadata jsonb DEFAULT '{}', allow_overdraft boolean DEFAULT false)
RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_open_account';
COMMENT ON FUNCTION wallet.open_account(text, text, jsonb, boolean) IS
    'Opens an active account in a currency; returns its id. No overdraft unless allow_overdraft.';

CREATE FUNCTION wallet.freeze_account(account_id bigint)
RETURNS boolean
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_freeze_account';
COMMENT ON FUNCTION wallet.freeze_account(bigint) IS
    'Freezes an account (no transfers in or out); true if it changed, false if it was frozen already.';

CREATE FUNCTION wallet.unfreeze_account(account_id bigint)
RETURNS boolean
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_unfreeze_account';
COMMENT ON FUNCTION wallet.unfreeze_account(bigint) IS
    'Makes a frozen account active again; true if it changed, false if it was active already.';

CREATE FUNCTION wallet.close_account(account_id bigint)
RETURNS boolean
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_close_account';
COMMENT ON FUNCTION wallet.close_account(bigint) IS
    'Closes an empty account for good (balance and pending amounts 0); true if it changed.';

CREATE FUNCTION wallet.balance(account_id bigint)
RETURNS bigint
LANGUAGE c STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_balance';
COMMENT ON FUNCTION wallet.balance(bigint) IS 'The posted balance of an account, in minor units.';

-- ---- money movement --------------------------------------------------------------------------

CREATE FUNCTION wallet.transfer(debit_account_id bigint, credit_account_id bigint, amount bigint,
                                idempotency_key text DEFAULT NULL, metadata jsonb DEFAULT NULL)
RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_transfer';
COMMENT ON FUNCTION wallet.transfer(bigint, bigint, bigint, text, jsonb) IS
    'Moves amount (minor units) from the debit to the credit account atomically; returns the transfer id (its event seq). A repeated idempotency key returns the first answer.';

CREATE FUNCTION wallet.deposit(account_id bigint, amount bigint,
                               idempotency_key text DEFAULT NULL, metadata jsonb DEFAULT NULL)
RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_deposit';
COMMENT ON FUNCTION wallet.deposit(bigint, bigint, text, jsonb) IS
    'Transfer from the currency''s system account into the account; returns the transfer id.';

CREATE FUNCTION wallet.withdraw(account_id bigint, amount bigint,
                                idempotency_key text DEFAULT NULL, metadata jsonb DEFAULT NULL)
RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_withdraw';
COMMENT ON FUNCTION wallet.withdraw(bigint, bigint, text, jsonb) IS
    'Transfer from the account to the currency''s system account; returns the transfer id.';

-- Many transfers in one call. A C set-returning function (materialized): one row per transfer
-- straight from the library, where 0.2.0 to 0.4.0 had a PL/pgSQL wrapper unpack a result array
-- (about 5% of a batch's time, bench/RESULTS.md section 3).
CREATE FUNCTION wallet.transfer_batch(debit_account_ids bigint[], credit_account_ids bigint[],
                                      amounts bigint[], idempotency_keys text[] DEFAULT NULL,
                                      linked boolean[] DEFAULT NULL)
RETURNS TABLE (index integer, result text, transfer_id bigint)
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_transfer_batch_rows';
COMMENT ON FUNCTION wallet.transfer_batch(bigint[], bigint[], bigint[], text[], boolean[]) IS
    'Up to 10,000 transfers in one call, applied in order; one result per transfer (ok, exists, or a rejection name), never raising for a rejected transfer. linked[i] ties transfer i to the next: a chain succeeds or fails whole.';

-- How wallet.accounts and wallet.events are written now: 'direct' (the table access methods,
-- while the table has exactly the shape the extension gave it) or 'executor' (SQL statements,
-- which honour whatever a DBA added), with the reason (src/catalog.rs).
CREATE FUNCTION wallet.write_paths()
RETURNS TABLE (table_name text, write_path text, reason text)
LANGUAGE c STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_write_paths';
COMMENT ON FUNCTION wallet.write_paths() IS
    'How wallet.accounts, wallet.events and wallet.global_transactions are written now (direct or executor), and why.';

-- ---- reading ---------------------------------------------------------------------------------

-- Shared by the reading functions: the same rejections, with the same SQLSTATEs, as the C ones.
CREATE FUNCTION wallet._require_account(account_id bigint) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF account_id IS NULL THEN
        RAISE EXCEPTION 'invalid argument account_id: must not be NULL' USING ERRCODE = 'WA016';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM wallet.accounts AS a WHERE a.id = account_id) THEN
        RAISE EXCEPTION 'account % does not exist', account_id USING ERRCODE = 'WA001';
    END IF;
END
$fn$;

-- A bounded argument: NULL or out of [low, high] is refused with WA016, naming the argument.
CREATE FUNCTION wallet._require_range(argument text, value bigint, low bigint, high bigint)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF value IS NULL OR value NOT BETWEEN low AND high THEN
        RAISE EXCEPTION 'invalid argument %: must be between % and %, got %',
            argument, low, high, coalesce(value::text, 'NULL') USING ERRCODE = 'WA016';
    END IF;
END
$fn$;

CREATE FUNCTION wallet._require_page(max_rows integer) RETURNS void
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
RETURN wallet._require_range('max_rows', $1, 1, 10000);

CREATE FUNCTION wallet.get_account(account_id bigint)
RETURNS wallet.accounts
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    result wallet.accounts;
BEGIN
    PERFORM wallet._require_account(account_id);
    SELECT * INTO result FROM wallet.accounts AS a WHERE a.id = account_id;
    RETURN result;
END
$fn$;
COMMENT ON FUNCTION wallet.get_account(bigint) IS 'One account: currency, owner, status, balances.';

CREATE FUNCTION wallet.list_accounts(owner text DEFAULT NULL, currency text DEFAULT NULL,
                                     after_id bigint DEFAULT 0, max_rows integer DEFAULT 100)
RETURNS SETOF wallet.accounts
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM wallet._require_page(max_rows);
    RETURN QUERY
        SELECT a.* FROM wallet.accounts AS a
         WHERE (list_accounts.owner IS NULL OR a.owner = list_accounts.owner)
           AND (list_accounts.currency IS NULL OR a.currency = list_accounts.currency)
           AND a.id > coalesce(after_id, 0)
         ORDER BY a.id
         LIMIT max_rows;
END
$fn$;
COMMENT ON FUNCTION wallet.list_accounts(text, text, bigint, integer) IS
    'Accounts by owner and/or currency, in id order, paged with after_id (keyset) and max_rows.';

CREATE FUNCTION wallet.statement(account_id bigint, after_seq bigint DEFAULT 0,
                                 max_rows integer DEFAULT 100)
RETURNS TABLE (seq bigint, occurred_at timestamptz, event_type text,
               counterparty_account_id bigint, amount bigint, balance bigint,
               idempotency_key text, metadata jsonb)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    walk boolean;
BEGIN
    PERFORM wallet._require_account(account_id);
    PERFORM wallet._require_page(max_rows);
    -- Money events from the account's postings (cut at max_rows) and its chain (the events not
    -- posted yet; see "History paths" in sql/schema.sql), lifecycle events from their index.
    -- Every chain event comes after every posted one: when the postings fill the page, the chain
    -- is not walked at all (paging through older history costs a page, not the chain).
    SELECT count(*) < max_rows INTO walk
      FROM (SELECT FROM wallet.postings AS p CROSS JOIN LATERAL unnest(p.seqs) AS u (seq)
             WHERE p.account_id = statement.account_id
               AND p.last_seq > coalesce(after_seq, 0) AND u.seq > coalesce(after_seq, 0)
             LIMIT max_rows) AS page;
    RETURN QUERY
        SELECT s.* FROM (
            SELECT m.seq, m.occurred_at, m.event_type,
                   CASE WHEN m.debit_account_id = statement.account_id
                        THEN m.credit_account_id ELSE m.debit_account_id END,
                   CASE WHEN m.debit_account_id = statement.account_id
                        THEN -m.amount ELSE m.amount END,
                   CASE WHEN m.debit_account_id = statement.account_id
                        THEN m.debit_balance ELSE m.credit_balance END,
                   m.idempotency_key, m.data
              FROM ((SELECT e.* FROM wallet.postings AS p
                      CROSS JOIN LATERAL unnest(p.seqs) AS u (seq)
                      JOIN wallet.events AS e ON e.seq = u.seq
                     WHERE p.account_id = statement.account_id
                       AND p.last_seq > coalesce(after_seq, 0) AND u.seq > coalesce(after_seq, 0)
                     ORDER BY p.last_seq, u.seq LIMIT max_rows)
                    UNION ALL
                    SELECT c.* FROM wallet._chain(statement.account_id, coalesce(after_seq, 0)) AS c
                     WHERE walk AND c.seq > coalesce(after_seq, 0)) AS m
            UNION ALL
            (SELECT e.seq, e.occurred_at, e.event_type, NULL::bigint, NULL::bigint,
                    CASE WHEN e.event_type = 'account_opened' THEN 0::bigint
                         ELSE (e.data ->> 'balance')::bigint END,
                    e.idempotency_key, e.data
               FROM wallet.events AS e
              WHERE e.account_id = statement.account_id AND e.seq > coalesce(after_seq, 0)
                AND e.event_type <> 'currency_created'
              ORDER BY e.seq LIMIT max_rows)
        ) AS s (seq, occurred_at, event_type, counterparty_account_id, amount, balance,
                idempotency_key, metadata)
        ORDER BY s.seq
        LIMIT max_rows;
END
$fn$;
COMMENT ON FUNCTION wallet.statement(bigint, bigint, integer) IS
    'An account''s events in sequence with signed amount and running posted balance; page with after_seq.';

CREATE FUNCTION wallet.get_transfer(transfer_id bigint)
RETURNS TABLE (transfer_id bigint, occurred_at timestamptz, debit_account_id bigint,
               credit_account_id bigint, amount bigint, currency text,
               idempotency_key text, metadata jsonb)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT e.seq, e.occurred_at, e.debit_account_id, e.credit_account_id, e.amount, e.currency,
           e.idempotency_key, e.data
      FROM wallet.events AS e
     WHERE e.seq = $1 AND e.event_type IN ('transfer', 'hold_confirmed');
END;
COMMENT ON FUNCTION wallet.get_transfer(bigint) IS 'One transfer (or a confirmed hold''s posting) by id; no row when there is none.';

-- The invariants an auditor checks first, per currency: the balances sum to exactly 0, and no
-- account without overdraft permission is below zero (counting outgoing reservations).
CREATE FUNCTION wallet.trial_balance()
RETURNS TABLE (currency text, accounts bigint, total_balance numeric,
               forbidden_negative_accounts bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT c.code, count(a.id), coalesce(sum(a.balance::numeric), 0),
           count(a.id) FILTER (WHERE NOT a.allow_overdraft AND a.balance - a.pending_debit < 0)
      FROM wallet.currencies AS c
      LEFT JOIN wallet.accounts AS a ON a.currency = c.code
     GROUP BY c.code
     ORDER BY c.code;
END;
COMMENT ON FUNCTION wallet.trial_balance() IS
    'Per currency: account count, sum of balances (must be 0), accounts below zero without permission (must be 0).';

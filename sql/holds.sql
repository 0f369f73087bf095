-- Holds: Try-Confirm/Cancel reservations on one database, keyed by (global transaction id,
-- branch id). The C functions (src/api.rs -> storage.rs, rules in tcc.rs) are the participant
-- side of the protocol; sql/tcc.sql is the coordinator.
--
-- A hold moves money in two steps, each an event: hold_placed reserves the amount (the debit
-- account's pending_debit and the credit account's pending_credit grow; posted balances do not
-- move; available = balance - pending_debit drops at once), then hold_confirmed posts up to the
-- reserved amount and releases the whole reservation, or hold_cancelled / hold_expired release
-- it. Events carry the posted movement in amount (0 except for hold_confirmed) and the pending
-- movement in pending_delta, so replaying the log reproduces all four balances.

CREATE SEQUENCE wallet.holds_id_seq AS bigint;
CREATE TABLE wallet.holds (
    hold_id           bigint PRIMARY KEY DEFAULT pg_catalog.nextval('wallet.holds_id_seq'),
    gtid              text NOT NULL,    -- global transaction id
    branch            text NOT NULL,    -- branch id within it
    debit_account_id  bigint,           -- NULL for a cancel that arrived before its try
    credit_account_id bigint,
    currency          text,
    reserved          bigint NOT NULL,  -- amount reserved at try (0 for an empty cancel)
    status            text NOT NULL,    -- pending | confirmed | cancelled | expired
    confirmed_amount  bigint,           -- posted by confirm (<= reserved)
    confirm_seq       bigint,           -- the posting's event (its transfer id)
    created_at        timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    expires_at        timestamptz,      -- after it, no confirm; expiry releases the funds
    finished_at       timestamptz,
    UNIQUE (gtid, branch)
);
CREATE INDEX holds_expiry_idx ON wallet.holds (expires_at) WHERE status = 'pending';
CREATE INDEX holds_debit_idx ON wallet.holds (debit_account_id) WHERE status = 'pending';
CREATE INDEX holds_credit_idx ON wallet.holds (credit_account_id) WHERE status = 'pending';
COMMENT ON TABLE wallet.holds IS
    'Holds (TC/C branches on this database) by (gtid, branch); every change is also an event.';
SELECT pg_catalog.pg_extension_config_dump('wallet.holds', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.holds_id_seq', '');
ALTER SEQUENCE wallet.holds_id_seq OWNED BY wallet.holds.hold_id;

CREATE FUNCTION wallet.try_hold(gtid text, branch text, debit_account_id bigint,
                                credit_account_id bigint, amount bigint,
                                timeout interval DEFAULT NULL, currency text DEFAULT NULL)
RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_try_hold';
COMMENT ON FUNCTION wallet.try_hold(text, text, bigint, bigint, bigint, interval, text) IS
    'Try: reserves amount on the debit account for the credit account until the timeout (default wallet.hold_timeout); returns the hold id. NULL for one account = the system account of currency (or of the other account''s currency). A repeat returns the first answer; a try after its cancel is refused (WA023).';

CREATE FUNCTION wallet.confirm_hold(gtid text, branch text, amount bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_confirm_hold';
COMMENT ON FUNCTION wallet.confirm_hold(text, text, bigint) IS
    'Confirm: posts amount (default: all reserved, at most that) and releases the rest; returns the posting''s transfer id. A repeat returns the first answer.';

CREATE FUNCTION wallet.cancel_hold(gtid text, branch text)
RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_cancel_hold';
COMMENT ON FUNCTION wallet.cancel_hold(text, text) IS
    'Cancel: releases the hold; for a try that never arrived, records the cancel (no effect) so that the try is refused later. Returns the hold id; a repeat returns the first answer.';

CREATE FUNCTION wallet.expire_holds(max_rows integer DEFAULT 1000)
RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_expire_holds';
COMMENT ON FUNCTION wallet.expire_holds(integer) IS
    'Releases up to max_rows pending holds past their timeout (status expired, one event each); returns how many. Run by the worker each round, or from cron.';

-- The functions below that read wallet.holds plan with enable_seqscan off: the table starts
-- empty, and a plan kept from then would scan it sequentially (see src/spi.rs, Kept::index_only).

-- A hold by its key.
CREATE FUNCTION wallet.get_hold(gtid text, branch text)
RETURNS wallet.holds
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $fn$
DECLARE
    result wallet.holds;
BEGIN
    SELECT * INTO result FROM wallet.holds AS h
     WHERE h.gtid = get_hold.gtid AND h.branch = get_hold.branch;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'hold %/% does not exist', coalesce(gtid, 'NULL'), coalesce(branch, 'NULL')
            USING ERRCODE = 'WA018';
    END IF;
    RETURN result;
END
$fn$;
COMMENT ON FUNCTION wallet.get_hold(text, text) IS 'One hold: accounts, reserved, status, timeout.';

-- The four balances of an account.
CREATE FUNCTION wallet.account_balances(account_id bigint,
    OUT posted bigint, OUT pending_out bigint, OUT pending_in bigint, OUT available numeric)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM wallet._require_account(account_id);
    SELECT a.balance, a.pending_debit, a.pending_credit,
           a.balance::numeric - a.pending_debit
      INTO posted, pending_out, pending_in, available
      FROM wallet.accounts AS a WHERE a.id = account_id;
END
$fn$;
COMMENT ON FUNCTION wallet.account_balances(bigint) IS
    'Posted balance, pending outgoing and incoming holds, and available (posted - pending out).';

-- An account's pending holds, either side, oldest first.
CREATE FUNCTION wallet.open_holds(account_id bigint)
RETURNS SETOF wallet.holds
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $fn$
BEGIN
    PERFORM wallet._require_account(account_id);
    RETURN QUERY
        SELECT h.* FROM wallet.holds AS h
         WHERE h.status = 'pending' AND h.debit_account_id = open_holds.account_id
        UNION ALL
        SELECT h.* FROM wallet.holds AS h
         WHERE h.status = 'pending' AND h.credit_account_id = open_holds.account_id
         ORDER BY hold_id;
END
$fn$;
COMMENT ON FUNCTION wallet.open_holds(bigint) IS 'Pending holds of an account (paying or receiving side).';

-- The participant's try as the coordinator sends it: try_hold, answered with the hold's currency
-- (which the coordinator passes on to the other branch, so that a currency mismatch across
-- nodes is refused). Its own statement, so it sees the hold try_hold just wrote.
CREATE FUNCTION wallet.try_branch(gtid text, branch text, debit_account_id bigint,
                                  credit_account_id bigint, amount bigint,
                                  timeout interval DEFAULT NULL, currency text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $fn$
DECLARE
    id bigint := wallet.try_hold(gtid, branch, debit_account_id, credit_account_id, amount,
                                 timeout, currency);
BEGIN
    RETURN (SELECT h.currency FROM wallet.holds AS h WHERE h.hold_id = id);
END
$fn$;
COMMENT ON FUNCTION wallet.try_branch(text, text, bigint, bigint, bigint, interval, text) IS
    'try_hold, answering the hold''s currency: what a coordinator calls on a participant.';

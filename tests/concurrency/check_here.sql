-- After here.pgbench: every global transaction of this node alone finished confirmed, each moved
-- its money exactly once (balances against the ledger's confirmed rows), and the MISSION
-- invariants still hold. Each check raises on failure.
DO $$
DECLARE
    n bigint;
BEGIN
    SELECT count(*) INTO n FROM wallet.global_transactions
     WHERE gtid LIKE 'here-%' AND (finished_at IS NULL OR outcome IS DISTINCT FROM 'confirmed');
    IF n <> 0 THEN RAISE EXCEPTION '% here-alone global transactions unfinished or not confirmed', n; END IF;
    SELECT count(*) INTO n FROM wallet.global_transactions WHERE gtid LIKE 'here-%';
    IF n < 250 THEN RAISE EXCEPTION 'only % of the 300 gtids recorded: the race was not run', n; END IF;
    -- Each account moved by exactly the sum of the confirmed legs on it.
    SELECT count(*) INTO n FROM (
        SELECT a.id, a.balance - b.balance AS moved,
               coalesce((SELECT sum(l.amount) FROM wallet.global_transactions g,
                                unnest(g.leg_account_ids, g.leg_amounts) AS l(account, amount)
                          WHERE g.gtid LIKE 'here-%' AND g.outcome = 'confirmed' AND l.account = a.id), 0) AS expected
          FROM wallet.accounts a JOIN conc.here_base b USING (id)) x
     WHERE moved <> expected;
    IF n <> 0 THEN RAISE EXCEPTION '% accounts moved other than their confirmed legs', n; END IF;
    -- A single call's posting is one transfer event per gtid, never two.
    SELECT count(*) INTO n FROM (SELECT e.data->>'gtid' FROM wallet.events e
                                  WHERE e.data->>'gtid' LIKE 'here-%' AND e.event_type = 'transfer'
                                  GROUP BY 1 HAVING count(*) > 1) d;
    IF n <> 0 THEN RAISE EXCEPTION '% gtids posted twice', n; END IF;
    IF EXISTS (SELECT 1 FROM wallet.trial_balance() WHERE total_balance <> 0 OR forbidden_negative_accounts <> 0) THEN
        RAISE EXCEPTION 'trial balance broken';
    END IF;
    SELECT count(*) INTO n FROM wallet.verify();
    IF n <> 0 THEN RAISE EXCEPTION 'verify() found % differences', n; END IF;
    SELECT count(*) INTO n FROM wallet.holds WHERE gtid LIKE 'here-%' AND status = 'pending';
    IF n <> 0 THEN RAISE EXCEPTION '% holds of here-alone batches left pending', n; END IF;
END $$;
SELECT 'here-alone race: ' || count(*) || ' gtids, all confirmed once' AS ok
  FROM wallet.global_transactions WHERE gtid LIKE 'here-%';

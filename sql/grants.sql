-- Privileges, applied after every object exists. Nobody but the owner writes the tables; the
-- event log refuses UPDATE, DELETE and TRUNCATE even to the owner (triggers in schema.sql).
--   wallet_reader:   read the tables and call the reading functions.
--   wallet_operator: wallet_reader, plus every function that moves money or changes accounts.
-- Grant them to application roles: GRANT wallet_operator TO app;

REVOKE ALL ON ALL TABLES IN SCHEMA wallet FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA wallet FROM PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA wallet FROM PUBLIC;

GRANT USAGE ON SCHEMA wallet TO wallet_reader, wallet_operator;
GRANT SELECT ON ALL TABLES IN SCHEMA wallet TO wallet_reader;
GRANT wallet_reader TO wallet_operator;

GRANT EXECUTE ON FUNCTION
    wallet.balance(bigint),
    wallet.get_account(bigint),
    wallet.list_accounts(text, text, bigint, integer),
    wallet.statement(bigint, bigint, integer),
    wallet.get_transfer(bigint),
    wallet.verify(boolean),
    wallet.verify_read_side(),
    wallet.check_snapshot(bigint),
    wallet._tail_after(xid8, bigint),
    wallet._replayed_balances(bigint),
    wallet._key_of_position(bigint),
    wallet.trial_balance(),
    wallet._require_account(bigint),
    wallet._require_page(integer),
    wallet._require_range(text, bigint, bigint, bigint),
    wallet.event_text(wallet.events),
    wallet._link_hash(bytea, text),
    wallet.chain_head(),
    wallet.verify_chain(bigint, text),
    wallet.verify_postings(),
    wallet.write_paths(),
    wallet._event_text_v1(wallet.events),
    wallet._chain(bigint, bigint, timestamptz),
    wallet._posted_seq(),
    wallet.events_after(bigint, integer),
    wallet.balance_at(bigint, bigint),
    wallet.balance_at_time(bigint, timestamptz),
    wallet.statement_between(bigint, bigint, bigint, integer),
    wallet._moves_money(text),
    wallet.get_hold(text, text),
    wallet.account_balances(bigint),
    wallet.open_holds(bigint)
TO wallet_reader;

GRANT EXECUTE ON FUNCTION
    wallet.create_currency(text, integer),
    wallet.spread_settlement(text, integer),
    wallet.open_account(text, text, jsonb, boolean),
    wallet.freeze_account(bigint),
    wallet.unfreeze_account(bigint),
    wallet.close_account(bigint),
    wallet.transfer(bigint, bigint, bigint, text, jsonb),
    wallet.deposit(bigint, bigint, text, jsonb),
    wallet.withdraw(bigint, bigint, text, jsonb),
    wallet.transfer_batch(bigint[], bigint[], bigint[], text[], boolean[]),
    wallet.seal(integer),
    wallet._require_max_events(integer),
    wallet.refresh_read_side(integer),
    wallet.take_snapshot(),
    wallet.rebuild_read_side(),
    wallet.try_hold(text, text, bigint, bigint, bigint, interval, text),
    wallet.confirm_hold(text, text, bigint),
    wallet.cancel_hold(text, text),
    wallet.try_branch(text, text, bigint, bigint, bigint, interval, text),
    wallet.expire_holds(integer),
    wallet.tcc_try(text[], text[], bigint[], bigint[], bigint[], interval),
    wallet.tcc_confirm(text[], text[]),
    wallet.tcc_cancel(text[], text[]),
    wallet.post_branch(text[], bigint[], bigint[], bigint[], boolean[]),
    wallet.undo_branch(text[], text[]),
    wallet.resume_global_transaction(text)
TO wallet_operator;
GRANT EXECUTE ON PROCEDURE
    wallet.transfer_across(text, text, bigint, text, bigint, bigint, interval, text, text),
    wallet.transfer_global(text, text[], bigint[], bigint[], text, interval, text),
    wallet.transfer_across_batch(text[], text[], bigint[], text[], bigint[], bigint[], text, interval, text[], text[], text[]),
    wallet.recover(integer, integer)
TO wallet_operator;
-- Not granted to anyone: wallet.register_node and wallet.remove_node (for the extension's owner,
-- a superuser: the coordinator connects to registered nodes with the owner's credentials), the
-- helpers _conninfo_options, _node_options_valid and _guard_drop, and USAGE on the foreign-data
-- wrapper wallet_nodes and its servers (so no role can connect with a node's credentials).

-- The table-level refusal, on top of the triggers: no role is granted these on the log.
REVOKE UPDATE, DELETE, TRUNCATE ON wallet.events, wallet.chain FROM PUBLIC, wallet_reader, wallet_operator;

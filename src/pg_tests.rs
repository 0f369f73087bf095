//! In-process tests of the pgrx layer (`cargo pgrx test`). SQLSTATEs of class WA are checked
//! through a PL/pgSQL helper that catches the error and returns its code as text: pgrx would
//! report a code it does not know as XX000.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn sqlstate_of(statement: &str) -> String {
        Spi::run(
            "CREATE OR REPLACE FUNCTION pg_temp.sqlstate_of(stmt text) RETURNS text
             LANGUAGE plpgsql AS $$ BEGIN EXECUTE stmt; RETURN 'ok';
             EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END $$",
        )
        .unwrap();
        Spi::get_one_with_args::<String>("SELECT pg_temp.sqlstate_of($1)", &[statement.into()])
            .unwrap()
            .unwrap()
    }

    fn one_i64(query: &str) -> i64 {
        Spi::get_one::<i64>(query).unwrap().unwrap()
    }

    #[pg_test]
    fn transfer_moves_money_and_records_one_event() {
        Spi::run("SELECT wallet.create_currency('TAA')").unwrap();
        let a = one_i64("SELECT wallet.open_account('TAA', 'alice')");
        let b = one_i64("SELECT wallet.open_account('TAA', 'bob')");
        one_i64(&format!("SELECT wallet.deposit({a}, 1000)"));
        let events_before = one_i64("SELECT count(*) FROM wallet.events");
        let id = one_i64(&format!("SELECT wallet.transfer({a}, {b}, 300)"));
        assert_eq!(one_i64(&format!("SELECT wallet.balance({a})")), 700);
        assert_eq!(one_i64(&format!("SELECT wallet.balance({b})")), 300);
        assert_eq!(
            one_i64("SELECT count(*) FROM wallet.events") - events_before,
            1
        );
        assert_eq!(
            one_i64(&format!(
                "SELECT debit_balance FROM wallet.events WHERE seq = {id}"
            )),
            700
        );
        assert_eq!(one_i64("SELECT count(*) FROM wallet.verify()"), 0);
        assert_eq!(
            one_i64("SELECT sum(total_balance)::bigint FROM wallet.trial_balance()"),
            0
        );
    }

    #[pg_test]
    fn rejections_carry_their_sqlstate_and_write_nothing() {
        Spi::run("SELECT wallet.create_currency('TAB'); SELECT wallet.create_currency('TAC')")
            .unwrap();
        let a = one_i64("SELECT wallet.open_account('TAB')");
        let b = one_i64("SELECT wallet.open_account('TAB')");
        let u = one_i64("SELECT wallet.open_account('TAC')");
        one_i64(&format!("SELECT wallet.deposit({a}, 100)"));
        let events = one_i64("SELECT count(*) FROM wallet.events");
        let cases = [
            (format!("SELECT wallet.transfer({a}, 999999, 1)"), "WA001"),
            (format!("SELECT wallet.transfer({a}, {a}, 1)"), "WA002"),
            (format!("SELECT wallet.transfer({a}, {b}, 0)"), "WA003"),
            (format!("SELECT wallet.transfer({a}, {b}, NULL)"), "WA003"),
            (format!("SELECT wallet.transfer({a}, {u}, 1)"), "WA005"),
            (format!("SELECT wallet.transfer({a}, {b}, 101)"), "WA008"),
            (format!("SELECT wallet.transfer({a}, {b}, 1, '')"), "WA010"),
            (
                format!("SELECT wallet.transfer({a}, {b}, 1, NULL, '[1]')"),
                "WA016",
            ),
        ];
        for (statement, expected) in cases {
            assert_eq!(sqlstate_of(&statement), expected, "{statement}");
        }
        assert_eq!(one_i64("SELECT count(*) FROM wallet.events"), events);
        assert_eq!(one_i64(&format!("SELECT wallet.balance({a})")), 100);
        assert_eq!(one_i64(&format!("SELECT wallet.balance({b})")), 0);
    }

    #[pg_test]
    fn idempotent_retry_returns_the_first_answer() {
        Spi::run("SELECT wallet.create_currency('TAD')").unwrap();
        let a = one_i64("SELECT wallet.open_account('TAD')");
        let b = one_i64("SELECT wallet.open_account('TAD')");
        one_i64(&format!("SELECT wallet.deposit({a}, 100)"));
        let first = one_i64(&format!("SELECT wallet.transfer({a}, {b}, 10, 'order-1')"));
        let again = one_i64(&format!("SELECT wallet.transfer({a}, {b}, 10, 'order-1')"));
        assert_eq!(first, again);
        assert_eq!(one_i64(&format!("SELECT wallet.balance({b})")), 10);
        assert_eq!(
            sqlstate_of(&format!("SELECT wallet.transfer({a}, {b}, 11, 'order-1')")),
            "WA009"
        );
    }

    #[pg_test]
    fn event_log_refuses_update_delete_truncate() {
        Spi::run("SELECT wallet.create_currency('TAE')").unwrap();
        for statement in [
            "UPDATE wallet.events SET amount = 1",
            "DELETE FROM wallet.events",
            "TRUNCATE wallet.events",
        ] {
            assert_eq!(sqlstate_of(statement), "WA017", "{statement}");
        }
    }
}

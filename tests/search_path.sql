-- Per-database set-up of tests/search_path.sh, run as the superuser in sp and in sp2:
--   psql -v coordinator=on|off -v srcload=FILE -v conninfo=CONNINFO -f tests/search_path.sql
-- It installs wallet_ext, the counter shadows fire on, the harness schema sp_test, and then the
-- shadows: for every name and operator symbol the extension's SQL uses, a copy of every
-- pg_catalog function, aggregate and operator of that name in schemas evil (superuser's),
-- public and sp_dbowner (owned by, and created as, the non-superuser owner of database sp).
-- Every statement here runs with search_path = pg_catalog, so none of it can reach a shadow.

SET search_path = pg_catalog;
SET client_min_messages = warning;

CREATE EXTENSION IF NOT EXISTS dblink SCHEMA public;
CREATE EXTENSION IF NOT EXISTS wallet_ext;

CREATE SCHEMA sp_test;
GRANT USAGE ON SCHEMA sp_test TO sp_dbowner;

-- What a shadow bumps before it raises: a sequence, so the count survives the caller's rollback.
CREATE SEQUENCE public.shadow_fired;
GRANT USAGE, SELECT ON SEQUENCE public.shadow_fired TO PUBLIC;
CREATE SCHEMA evil;
GRANT USAGE ON SCHEMA evil TO PUBLIC;
CREATE SCHEMA sp_dbowner AUTHORIZATION sp_dbowner;
GRANT USAGE ON SCHEMA sp_dbowner TO PUBLIC;

-- ---- the wallet's data for the attack ----------------------------------------------------------

\if :coordinator
SELECT wallet.register_node('sp2', :'conninfo') AS node \gset
\endif
SELECT wallet.create_currency('EUR', 2) AS system_account \gset
SET sp.system_account = :'system_account';

-- Placeholders of the call templates (tests/search_path/calls.sql): per tag (role and phase)
-- accounts A1, A2 (funded), A3 (empty) here and B1, B2, B4 (funded), B3 (funded, frozen) in sp2;
-- tag '*' for values common to all.
CREATE TABLE sp_test.tagvals (tag text, key text, val text, PRIMARY KEY (tag, key));
DO $do$
DECLARE
    t text;
    coordinator boolean := current_database() = 'sp';
    a bigint;
BEGIN
    FOREACH t IN ARRAY ARRAY['SUA', 'APPA', 'AUDA', 'OWNA', 'SUB', 'APPB', 'AUDB', 'OWNB', 'WRK'] LOOP
        IF coordinator THEN
            a := wallet.open_account('EUR', 'sp-' || t || '-a1');
            PERFORM wallet.deposit(a, 1000000);
            INSERT INTO sp_test.tagvals VALUES (t, 'A1', a);
            a := wallet.open_account('EUR', 'sp-' || t || '-a2');
            PERFORM wallet.deposit(a, 1000000);
            INSERT INTO sp_test.tagvals VALUES (t, 'A2', a);
            a := wallet.open_account('EUR', 'sp-' || t || '-a3');
            INSERT INTO sp_test.tagvals VALUES (t, 'A3', a);
        ELSE
            a := wallet.open_account('EUR', 'sp2-' || t || '-b1');
            PERFORM wallet.deposit(a, 1000000);
            INSERT INTO sp_test.tagvals VALUES (t, 'B1', a);
            a := wallet.open_account('EUR', 'sp2-' || t || '-b2');
            PERFORM wallet.deposit(a, 1000000);
            INSERT INTO sp_test.tagvals VALUES (t, 'B2', a);
            a := wallet.open_account('EUR', 'sp2-' || t || '-b4');
            PERFORM wallet.deposit(a, 1000000);
            INSERT INTO sp_test.tagvals VALUES (t, 'B4', a);
            a := wallet.open_account('EUR', 'sp2-' || t || '-b3');
            PERFORM wallet.deposit(a, 1000);
            PERFORM wallet.freeze_account(a);
            INSERT INTO sp_test.tagvals VALUES (t, 'B3', a);
        END IF;
    END LOOP;
    INSERT INTO sp_test.tagvals VALUES ('*', 'SYS', current_setting('sp.system_account'));
    INSERT INTO sp_test.tagvals
    SELECT '*', 'T', wallet.transfer(a1.val::bigint, a2.val::bigint, 1)::text
      FROM sp_test.tagvals AS a1, sp_test.tagvals AS a2
     WHERE coordinator AND a1.tag = 'SUA' AND a1.key = 'A1' AND a2.tag = 'SUA' AND a2.key = 'A2';
    INSERT INTO sp_test.tagvals VALUES ('*', 'SNAP', wallet.take_snapshot()::text);
END
$do$;

-- ---- the texts the extension runs -----------------------------------------------------------------

CREATE TABLE sp_test.src (origin text, name text, body text);
INSERT INTO sp_test.src
SELECT 'function', p.oid::regprocedure::text, pg_get_functiondef(p.oid)
  FROM pg_proc AS p JOIN pg_language AS l ON l.oid = p.prolang
 WHERE p.pronamespace = 'wallet'::regnamespace AND l.lanname IN ('sql', 'plpgsql');
-- sql/queries/*.sql (origin 'query') and src/**/*.rs (origin 'rust'), from the script.
\i :srcload

-- SQL texts: function definitions and query files without their comments; from Rust sources the
-- string literals that look like SQL (char literals removed first, so '"' cannot pair quotes).
CREATE TABLE sp_test.texts AS
SELECT s.origin, s.name,
       regexp_replace(regexp_replace(s.body, '/\*.*?\*/', ' ', 'g'), '--.*$', ' ', 'gn') AS body
  FROM sp_test.src AS s WHERE s.origin <> 'rust'
UNION ALL
SELECT 'rust', s.name, m[1]
  FROM sp_test.src AS s,
       regexp_matches(regexp_replace(s.body, $re$b?'(\\.|[^\\'\n])'$re$, ' ', 'g'),
                      '"((?:[^"\\]|\\.)*)"', 'g') AS m
 WHERE s.origin = 'rust'
   AND m[1] ~* '\m(select|insert|update|delete|call|with|values|returning|prepared|commit|rollback|begin)\M';

-- Identifiers followed by "(" (plus names the grammar calls for without writing them).
CREATE TABLE sp_test.used_names AS
SELECT DISTINCT lower(m[1]) AS name
  FROM sp_test.texts AS t, regexp_matches(t.body, '([A-Za-z_][A-Za-z0-9_]*)\s*\(', 'g') AS m
UNION
SELECT unnest(ARRAY['timezone', 'btrim', 'ltrim', 'rtrim', 'date_part', 'extract', 'overlaps',
                    'like_escape', 'similar_to_escape', 'substring', 'position', 'overlay', 'normalize']);
-- Operator symbols: every run of operator characters and each of its substrings, plus what the
-- grammar turns into operators (IN, ANY, BETWEEN, LIKE, CASE, NULLIF, IS DISTINCT FROM, !=).
CREATE TABLE sp_test.used_ops AS
WITH tokens AS (
    SELECT DISTINCT m[1] AS tok
      FROM sp_test.texts AS t, regexp_matches(t.body, '([-+*/<>=~!@#%^&|`?]+)', 'g') AS m
)
SELECT DISTINCT substr(tok, i, n) AS op
  FROM tokens, generate_series(1, length(tok)) AS i, generate_series(1, length(tok)) AS n
 WHERE i + n - 1 <= length(tok)
UNION
SELECT unnest(ARRAY['=', '<>', '<', '>', '<=', '>=', '~~', '!~~', '~~*', '!~~*', '~', '!~', '||', '-', '+']);

-- ---- the shadows -------------------------------------------------------------------------------

-- Concrete types put in place of polymorphic ones (element, array).
CREATE TABLE sp_test.concrete (ord integer, e text, a text);
INSERT INTO sp_test.concrete VALUES
    (1, 'bigint', 'bigint[]'), (2, 'integer', 'integer[]'), (3, 'text', 'text[]'),
    (4, 'numeric', 'numeric[]'), (5, 'boolean', 'boolean[]'), (6, 'jsonb', 'jsonb[]'),
    (7, 'timestamp with time zone', 'timestamp with time zone[]'), (8, 'bigint[]', 'bigint[]'),
    (9, 'text[]', 'text[]'), (10, 'smallint', 'smallint[]'), (11, 'json', 'json[]'),
    (12, 'interval', 'interval[]'), (13, 'bytea', 'bytea[]'), (14, 'xid8', 'xid8[]'),
    (15, 'name', 'name[]'), (16, 'oid', 'oid[]'), (17, 'double precision', 'double precision[]'),
    (18, 'date', 'date[]'), (19, 'uuid', 'uuid[]'), (20, 'character varying', 'character varying[]'),
    (21, 'timestamp without time zone', 'timestamp without time zone[]'), (22, 'boolean[]', 'boolean[]');

CREATE FUNCTION sp_test.subst(sig text, e text, a text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $fn$
DECLARE
    s text := sig;
BEGIN
    IF e IS NULL THEN
        RETURN s;
    END IF;
    s := regexp_replace(s, 'VARIADIC "any"', 'VARIADIC ' || a, 'g');
    s := regexp_replace(s, '"any"', e, 'g');
    s := regexp_replace(s, '\manycompatiblearray\M', a, 'g');
    s := regexp_replace(s, '\manycompatiblenonarray\M', e, 'g');
    s := regexp_replace(s, '\manycompatible\M', e, 'g');
    s := regexp_replace(s, '\manyarray\M', a, 'g');
    s := regexp_replace(s, '\manynonarray\M', e, 'g');
    s := regexp_replace(s, '\manyelement\M', e, 'g');
    RETURN s;
END
$fn$;

-- The body of every shadow: count, say so in the server log, and raise SH001.
CREATE FUNCTION sp_test.fire(label text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog
RETURN format($b$ LANGUAGE plpgsql SET search_path = pg_catalog AS $sh$
BEGIN
    PERFORM pg_catalog.nextval('public.shadow_fired'::pg_catalog.regclass);
    RAISE WARNING 'SH001 shadow fired: %% (in database %%, as %%)', %1$L, current_catalog, current_user;
    RAISE EXCEPTION 'shadow fired: %%', %1$L USING ERRCODE = 'SH001';
END
$sh$$b$, label);

-- One row per statement; the statements of a group (one shadow) succeed or fail together.
CREATE TABLE sp_test.ddl (grp integer, n integer, schema_name text, kind text, label text, stmt text);
CREATE TABLE sp_test.ddl_result (grp integer, schema_name text, kind text, ok boolean, error text);
CREATE TABLE sp_test.ddl_skipped (kind text, what text, why text);
-- How to drop a shadow again, by the signature its copies in the three schemas share (for the
-- diagnosis of tests/search_path.sh, which peels off the shadows that fired to find the next).
CREATE TABLE sp_test.ddl_drop (grp integer, sig text, schema_name text, label text, stmt text);
GRANT SELECT ON sp_test.ddl TO sp_dbowner;
GRANT INSERT ON sp_test.ddl_result TO sp_dbowner;

DO $do$
DECLARE
    poly constant text := '\m(anyelement|anyarray|anynonarray|anycompatible|anycompatiblearray|anycompatiblenonarray)\M|"any"';
    unsupported constant text := '\m(internal|cstring|anyenum|anyrange|anymultirange|anycompatiblerange|anycompatiblemultirange|language_handler|fdw_handler|index_am_handler|tsm_handler|table_am_handler|trigger|event_trigger|pg_ddl_command|opaque|unknown|anyelement|anyarray|anynonarray|anycompatible|anycompatiblearray|anycompatiblenonarray)\M|"any"';
    schemas constant text[] := ARRAY['evil', 'public', 'sp_dbowner'];
    p record;
    o record;
    c record;
    sch text;
    g integer := 0;
    args text;
    ident text;
    res text;
    l text;
    r text;
    kind text;
    v_sig text;
    label text;
    q text;
BEGIN
    CREATE TEMP TABLE seen (sig text PRIMARY KEY);
    -- Functions, aggregates, window functions.
    FOR p IN
        SELECT f.oid, f.proname, f.prokind, pg_get_function_arguments(f.oid) AS args,
               pg_get_function_identity_arguments(f.oid) AS ident,
               pg_get_function_result(f.oid) AS res, a.aggkind
          FROM pg_proc AS f LEFT JOIN pg_aggregate AS a ON a.aggfnoid = f.oid
         WHERE f.pronamespace = 'pg_catalog'::regnamespace
           AND f.proname IN (SELECT name FROM sp_test.used_names)
           AND f.prokind IN ('f', 'a', 'w')
         ORDER BY f.proname, f.oid
    LOOP
        IF p.prokind = 'a' AND p.aggkind <> 'n' THEN
            INSERT INTO sp_test.ddl_skipped VALUES ('aggregate', p.oid::regprocedure::text, 'ordered-set aggregate');
            CONTINUE;
        END IF;
        FOR c IN
            SELECT x.e, x.a FROM sp_test.concrete AS x WHERE (p.args || ' ' || p.res) ~ poly
            UNION ALL
            SELECT NULL, NULL WHERE NOT (p.args || ' ' || p.res) ~ poly
        LOOP
            args := sp_test.subst(p.args, c.e, c.a);
            ident := sp_test.subst(p.ident, c.e, c.a);
            res := sp_test.subst(p.res, c.e, c.a);
            kind := CASE WHEN p.prokind = 'f' AND c.e IS NULL THEN 'function (same signature)'
                         WHEN p.prokind = 'f' THEN 'function (concrete for polymorphic)'
                         WHEN p.prokind = 'a' THEN 'aggregate'
                         ELSE 'window function (as aggregate)' END;
            IF (args || ' ' || res) ~ unsupported THEN
                INSERT INTO sp_test.ddl_skipped VALUES (kind, format('%s(%s) -> %s', p.proname, args, res), 'type not expressible');
                CONTINUE;
            END IF;
            v_sig := format('%s %s(%s)', CASE WHEN p.prokind = 'f' THEN 'f' ELSE 'a' END, p.proname, ident);
            CONTINUE WHEN EXISTS (SELECT FROM seen WHERE seen.sig = v_sig);
            INSERT INTO seen VALUES (v_sig);
            FOREACH sch IN ARRAY schemas LOOP
                g := g + 1;
                IF p.prokind = 'f' THEN
                    label := format('%s.%s(%s)', sch, p.proname, ident);
                    INSERT INTO sp_test.ddl_drop VALUES (g, v_sig, sch, label,
                        format('DROP FUNCTION IF EXISTS %I.%I(%s)', sch, p.proname, ident));
                    INSERT INTO sp_test.ddl VALUES (g, 1, sch, kind, label,
                        format('CREATE FUNCTION %I.%I(%s) RETURNS %s', sch, p.proname, args, res) || sp_test.fire(label));
                ELSE
                    label := format('%s.%s(%s) [aggregate]', sch, p.proname, coalesce(nullif(ident, ''), '*'));
                    INSERT INTO sp_test.ddl_drop VALUES (g, v_sig, sch, label,
                        format('DROP AGGREGATE IF EXISTS %I.%I(%s)', sch, p.proname, coalesce(nullif(ident, ''), '*')));
                    INSERT INTO sp_test.ddl VALUES
                        (g, 1, sch, kind, label,
                         format('CREATE FUNCTION %I._sh_sfunc_%s(integer%s) RETURNS integer', sch, g,
                                CASE WHEN ident = '' THEN '' ELSE ', ' || ident END) || sp_test.fire(label)),
                        (g, 2, sch, kind, label,
                         format('CREATE FUNCTION %I._sh_ffunc_%s(integer) RETURNS %s', sch, g, res) || sp_test.fire(label)),
                        (g, 3, sch, kind, label,
                         format('CREATE AGGREGATE %I.%I(%s) (SFUNC = %I._sh_sfunc_%s, STYPE = integer, FINALFUNC = %I._sh_ffunc_%s)',
                                sch, p.proname, coalesce(nullif(ident, ''), '*'), sch, g, sch, g));
                END IF;
            END LOOP;
        END LOOP;
    END LOOP;
    -- Operators (prefix ones have no left argument).
    FOR o IN
        SELECT opr.oid, opr.oprname, opr.oprkind,
               CASE WHEN opr.oprleft = 0 THEN NULL ELSE format_type(opr.oprleft, NULL) END AS l,
               format_type(opr.oprright, NULL) AS r, format_type(opr.oprresult, NULL) AS res
          FROM pg_operator AS opr
         WHERE opr.oprnamespace = 'pg_catalog'::regnamespace
           AND opr.oprname IN (SELECT u.op FROM sp_test.used_ops AS u)
         ORDER BY opr.oprname, opr.oid
    LOOP
        FOR c IN
            SELECT x.e, x.a FROM sp_test.concrete AS x
             WHERE (coalesce(o.l, '') || ' ' || o.r || ' ' || o.res) ~ poly
            UNION ALL
            SELECT NULL, NULL WHERE NOT (coalesce(o.l, '') || ' ' || o.r || ' ' || o.res) ~ poly
        LOOP
            l := sp_test.subst(o.l, c.e, c.a);
            r := sp_test.subst(o.r, c.e, c.a);
            res := sp_test.subst(o.res, c.e, c.a);
            kind := CASE WHEN c.e IS NULL THEN 'operator (same signature)' ELSE 'operator (concrete for polymorphic)' END;
            IF (coalesce(l, '') || ' ' || r || ' ' || res) ~ unsupported THEN
                INSERT INTO sp_test.ddl_skipped VALUES (kind, format('%s %s %s -> %s', l, o.oprname, r, res), 'type not expressible');
                CONTINUE;
            END IF;
            v_sig := format('o %s(%s,%s)', o.oprname, coalesce(l, 'NONE'), r);
            CONTINUE WHEN EXISTS (SELECT FROM seen WHERE seen.sig = v_sig);
            INSERT INTO seen VALUES (v_sig);
            FOREACH sch IN ARRAY schemas LOOP
                g := g + 1;
                label := format('%s.%s(%s,%s) [operator]', sch, o.oprname, coalesce(l, 'NONE'), r);
                INSERT INTO sp_test.ddl_drop VALUES (g, v_sig, sch, label,
                    format('DROP OPERATOR IF EXISTS %I.%s (%s, %s)', sch, o.oprname, coalesce(l, 'NONE'), r));
                INSERT INTO sp_test.ddl VALUES
                    (g, 1, sch, kind, label,
                     format('CREATE FUNCTION %I._sh_op_%s(%s) RETURNS %s', sch, g,
                            concat_ws(', ', l, r), res) || sp_test.fire(label)),
                    (g, 2, sch, kind, label,
                     format('CREATE OPERATOR %I.%s (%sRIGHTARG = %s, FUNCTION = %I._sh_op_%s)', sch, o.oprname,
                            CASE WHEN l IS NULL THEN '' ELSE format('LEFTARG = %s, ', l) END, r, sch, g));
            END LOOP;
        END LOOP;
    END LOOP;
END
$do$;

-- Creates the shadows of one schema (as whoever runs it), each group in a subtransaction.
CREATE PROCEDURE sp_test.create_shadows(target text)
LANGUAGE plpgsql SET search_path = pg_catalog AS $fn$
DECLARE
    grp record;
    s record;
BEGIN
    FOR grp IN SELECT DISTINCT d.grp, d.kind FROM sp_test.ddl AS d WHERE d.schema_name = target ORDER BY d.grp LOOP
        BEGIN
            FOR s IN SELECT d.stmt FROM sp_test.ddl AS d WHERE d.grp = grp.grp ORDER BY d.n LOOP
                EXECUTE s.stmt;
            END LOOP;
            INSERT INTO sp_test.ddl_result VALUES (grp.grp, target, grp.kind, true, NULL);
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO sp_test.ddl_result VALUES (grp.grp, target, grp.kind, false, SQLERRM);
        END;
    END LOOP;
END
$fn$;
GRANT EXECUTE ON PROCEDURE sp_test.create_shadows(text) TO sp_dbowner;

CALL sp_test.create_shadows('evil');
CALL sp_test.create_shadows('public');
SET ROLE sp_dbowner;
CALL sp_test.create_shadows('sp_dbowner');
RESET ROLE;

-- Coverage, for the log.
\pset footer off
SELECT current_database() AS db,
       (SELECT count(*) FROM sp_test.used_names) AS names_used,
       (SELECT count(*) FROM sp_test.used_ops) AS operator_symbols_used,
       (SELECT count(*) FROM sp_test.texts) AS sql_texts;
SELECT schema_name, kind, count(*) FILTER (WHERE ok) AS created, count(*) FILTER (WHERE NOT ok) AS failed
  FROM sp_test.ddl_result GROUP BY 1, 2 ORDER BY 1, 2;
SELECT kind, why, count(*) AS skipped FROM sp_test.ddl_skipped GROUP BY 1, 2 ORDER BY 1, 2;
SELECT r.kind, r.error, count(*) AS failed, min(d.label) AS example
  FROM sp_test.ddl_result AS r JOIN sp_test.ddl AS d ON d.grp = r.grp AND d.n = 1
 WHERE NOT r.ok AND r.schema_name = 'evil'
 GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 15;

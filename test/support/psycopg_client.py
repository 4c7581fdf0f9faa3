#!/usr/bin/env python3
"""Load generator for prepared.test.ts: psycopg 3 with prepare_threshold=0 through the pooler.

Every query is prepared server-side on first use (psycopg names them _pg3_0, _pg3_1, ... per
connection, so every client reuses the same names for different texts). Each client thread has
its own connection and checks every result. A small PREPARED_MAX makes psycopg evict statements
from its cache, which it does by running SQL `DEALLOCATE _pg3_n` through PQsendQueryParams, i.e.
an unnamed Parse/Bind/Execute (libpq < 17 has no function to send a Close).

Usage: psycopg_client.py DSN CLIENTS STATEMENTS DISTINCT [PREPARED_MAX]
(PREPARED_MAX 0 or absent: psycopg's default cache size, 100.)
       psycopg_client.py rollback DSN
(two connections to one server: A's rollback() makes psycopg send DEALLOCATE ALL, again through
PQsendQueryParams; both must go on working. Prints {"results": [...], "errors": [...]}.)
       psycopg_client.py failed_pipeline DSN
(a pipeline whose second prepared statement fails: psycopg still takes the third, skipped by
PostgreSQL, as prepared, and binds it later; then the failed one once its table exists.)
       psycopg_client.py max_prepared DSN ADMIN_DSN
(max_prepared_statements changed with SET on the console while one client keeps its connection:
each value applies to it. Needs a pool of one server, in transaction mode.)
Both print {"results": [...], "errors": [...]}.
Prints one JSON line: {"ok": n, "errors": [...], "pooler_statements": n, "psycopg": "3.x"}.
Exit code 0 only when every statement gave the expected answer.
"""
import json
import os
import sys
import threading

import psycopg


def worker(dsn, tid, count, distinct, prepared_max, out):
    ok = 0
    errors = []
    try:
        with psycopg.connect(dsn, autocommit=True, prepare_threshold=0) as conn:
            if prepared_max > 0:
                conn.prepared_max = prepared_max
            for i in range(count):
                k = i % distinct
                # The literal k makes `distinct` different texts; `tid` proves whose text ran.
                sql = f"SELECT %s::int + {k} AS v, %s::text AS t, {tid} AS owner"
                try:
                    if i % 50 == 49:
                        with conn.transaction():
                            row = conn.execute(sql, (i, f"p{tid}-{i}")).fetchone()
                            row2 = conn.execute("SELECT %s::int * 2 AS d", (i,)).fetchone()
                            if row2 != (i * 2,):
                                raise AssertionError(f"txn row {row2!r}")
                    else:
                        row = conn.execute(sql, (i, f"p{tid}-{i}")).fetchone()
                    if row != (i + k, f"p{tid}-{i}", tid):
                        raise AssertionError(f"client {tid} statement {i}: got {row!r}")
                    ok += 1
                except Exception as e:  # noqa: BLE001 - every failure is reported, then we go on
                    errors.append(f"client {tid} statement {i}: {type(e).__name__}: {e}")
                    if len(errors) > 5:
                        break
            if tid == 0:
                n = conn.execute(
                    "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'PGPOOL%'"
                ).fetchone()
                out["pooler_statements"] = n[0] if n else 0
    except Exception as e:  # noqa: BLE001
        errors.append(f"client {tid}: {type(e).__name__}: {e}")
    with out["lock"]:
        out["ok"] += ok
        out["errors"].extend(errors)


def report(results, errors):
    """A scenario's outcome on stdout as one JSON line; exit 1 when anything went wrong."""
    print(json.dumps({"results": results, "errors": errors}))
    sys.exit(0 if not errors else 1)


def rollback_scenario(dsn):
    errors = []
    results = []
    a = psycopg.connect(dsn, prepare_threshold=0)
    b = psycopg.connect(dsn, prepare_threshold=0, autocommit=True)
    try:
        results.append(b.execute("SELECT %s::int + 100", (1,)).fetchone()[0])
        results.append(a.execute("SELECT %s::int + 200", (1,)).fetchone()[0])
        a.rollback()
        for conn, label, base in ((b, "b", 100), (a, "a", 200)):
            try:
                results.append(conn.execute(f"SELECT %s::int + {base}", (2,)).fetchone()[0])
            except Exception as e:  # noqa: BLE001
                errors.append(f"{label} after A's rollback: {type(e).__name__}: {e}")
    finally:
        a.close()
        b.close()
    report(results, errors)


def failed_pipeline_scenario(dsn):
    errors = []
    results = []
    table = f"later_{os.getpid()}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            with conn.pipeline() as p, conn.cursor() as cur:
                cur.execute("SELECT 1", prepare=True)
                cur.execute(f"SELECT * FROM {table}", prepare=True)
                try:
                    cur.execute("SELECT 2", prepare=True)
                    p.sync()
                    errors.append("the pipeline with a missing table did not fail")
                except psycopg.errors.UndefinedTable:
                    results.append("failed")
                # psycopg now binds "SELECT 2" by the name of its skipped Parse.
                cur.execute("SELECT 1", prepare=True)
                p.sync()
                cur.execute("SELECT 2", prepare=True)
                p.sync()
                cur.execute(f"CREATE TABLE {table} (a int)")
                cur.execute(f"SELECT * FROM {table}", prepare=True)
                p.sync()
            # Out of the pipeline, the same statements by the same names, with their answers.
            for sql, want in (("SELECT 1", [(1,)]), ("SELECT 2", [(2,)]), (f"SELECT * FROM {table}", [])):
                results.append(conn.execute(sql, prepare=True).fetchall() == want)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__}: {e}")
        finally:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    report(results, errors)


def max_prepared_scenario(dsn, admin_dsn):
    errors = []
    results = []
    admin = psycopg.connect(admin_dsn, autocommit=True)
    conn = psycopg.connect(dsn, autocommit=True)

    def on_server():
        return conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]

    def prepare(values):
        for i in values:
            if conn.execute(f"SELECT '{i}'", prepare=True).fetchone()[0] != str(i):
                errors.append(f"SELECT '{i}' gave a wrong answer")

    try:
        admin.execute("SET max_prepared_statements = 1")
        prepare(range(0, 5))
        results.append(on_server())
        admin.execute("SET max_prepared_statements = 5")
        prepare(range(5, 10))
        results.append(on_server())
        admin.execute("SET max_prepared_statements = 2")
        # Lowered: applied when the next statement is placed on the server.
        results.append(on_server())
        prepare([10])
        results.append(on_server())
        # 0 stops tracking: psycopg's own names go to PostgreSQL as they are.
        admin.execute("SET max_prepared_statements = 0")
        try:
            conn.execute("SELECT '10'", prepare=True)
            results.append("no error")
        except psycopg.errors.InvalidSqlStatementName:
            results.append("26000")
    except Exception as e:  # noqa: BLE001
        errors.append(f"{type(e).__name__}: {e}")
    finally:
        conn.close()
        admin.close()
    report(results, errors)


def main():
    if sys.argv[1] == "rollback":
        rollback_scenario(sys.argv[2])
        return
    if sys.argv[1] == "failed_pipeline":
        failed_pipeline_scenario(sys.argv[2])
        return
    if sys.argv[1] == "max_prepared":
        max_prepared_scenario(sys.argv[2], sys.argv[3])
        return
    dsn, clients, statements, distinct = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    prepared_max = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    out = {"ok": 0, "errors": [], "pooler_statements": -1, "lock": threading.Lock()}
    per = statements // clients
    threads = [threading.Thread(target=worker, args=(dsn, t, per, distinct, prepared_max, out)) for t in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    del out["lock"]
    out["psycopg"] = psycopg.__version__
    print(json.dumps(out))
    sys.exit(0 if not out["errors"] and out["ok"] == per * clients else 1)


if __name__ == "__main__":
    main()

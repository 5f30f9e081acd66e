"""python-tds client for tds-sim's integration test (tests/python_tds.rs).

Usage: pytds_client.py TDS_PORT CONTROL_PORT USER PASSWORD. Prints one "... OK" line per
check and "ALL OK" at the end; any failed check raises, so the exit status is non-zero.
python-tds is imported unconditionally: a missing driver must fail the test, not skip it.
"""
import json
import sys
import urllib.request

import pytds

port, control, user, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]

HEALTH = (
    "SELECT @@SERVERNAME AS server_name, ars.role_desc AS role_desc, "
    "ars.synchronization_health_desc AS synchronization_health_desc\n"
    "FROM sys.dm_hadr_availability_replica_states AS ars\n"
    "JOIN sys.availability_groups AS ag ON ag.group_id = ars.group_id\n"
    "WHERE ars.is_local = 1 AND ag.name = N'AG1';\n"
    "SELECT name, state_desc FROM sys.databases WHERE name IN (N'db1', N'db2');"
)


def connect(autocommit, pw=password):
    return pytds.connect(server="127.0.0.1", port=port, user=user, password=pw,
                         autocommit=autocommit, login_timeout=5, timeout=5)


def put_state(body):
    req = urllib.request.Request(f"http://127.0.0.1:{control}/state", data=json.dumps(body).encode(),
                                 method="PUT", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


for ac in (True, False):
    with connect(ac) as conn:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        check(cur.fetchall() == [(1,)], "SELECT 1")
        print(f"autocommit={ac} select1 OK")

        cur.execute(HEALTH)
        check(cur.fetchall() == [("SQL1", "PRIMARY", "HEALTHY")], "health first result set")
        check(cur.nextset(), "health second result set")
        check(cur.fetchall() == [("db1", "ONLINE"), ("db2", "RECOVERY_PENDING")], "databases")
        print(f"autocommit={ac} health OK")

        cur.execute("SELECT ars.role_desc FROM sys.dm_hadr_availability_replica_states AS ars "
                    "JOIN sys.availability_groups AS ag ON ag.group_id = ars.group_id "
                    "WHERE ars.is_local = %s AND ag.name = %s", (1, "AG1"))
        check(cur.fetchall() == [("PRIMARY",)], "parameterised health")
        cur.execute("SELECT name FROM sys.databases WHERE name = %(n)s", {"n": "db2"})
        check(cur.fetchall() == [("db2",)], "named parameter")
        cur.execute("SELECT %s AS echo", ("it's",))
        check(cur.fetchall() == [("it's",)], "string parameter echo")
        print(f"autocommit={ac} params OK")

        if not ac:
            # python-tds sent TM BEGIN; COMMIT and ROLLBACK start a new transaction each.
            cur.execute("SELECT @@TRANCOUNT")
            check(cur.fetchall() == [(1,)], "in a transaction")
            conn.commit()
            conn.rollback()
            cur.execute("SELECT @@TRANCOUNT")
            check(cur.fetchall() == [(1,)], "transaction after commit/rollback")
            print(f"autocommit={ac} transactions OK")

with connect(True) as conn:
    cur = conn.cursor()
    cur.execute(HEALTH)
    check(cur.fetchall()[0][1] == "PRIMARY", "primary before")
    put_state({"role": "SECONDARY"})
    cur.execute(HEALTH)
    check(cur.fetchall()[0][1] == "SECONDARY", "secondary after PUT on the same session")
    print("role change seen by open session OK")

    try:
        cur.execute("FROBNICATE ALL THE THINGS")
        raise AssertionError("unknown statement did not fail")
    except pytds.ProgrammingError as e:
        check(e.msg_no == 102, f"error number {e.msg_no}")
    cur.execute("SELECT 2")
    check(cur.fetchall() == [(2,)], "session usable after an error")
    print("unknown statement error 102 OK")

with connect(True) as conn:
    # The ledger: parameterised inserts (sp_executesql), a transaction, aggregates.
    cur = conn.cursor()
    put_state({"role": "PRIMARY"})
    for i in (1, 2, 3):
        cur.execute("INSERT INTO dbo.ledger (id, at) VALUES (%s, %s)", (i, i * 10))
        check(cur.rowcount == 1, f"rowcount {cur.rowcount}")
    cur.execute("SELECT COUNT(*), MAX(id) FROM dbo.ledger WHERE id BETWEEN %s AND %s", (2, 3))
    check(cur.fetchall() == [(2, 3)], "count and max")
    cur.execute("EXEC sp_set_session_context @key = N'external_cluster', @value = N'yes'")
    cur.execute("SELECT synchronization_state_desc, last_hardened_lsn FROM sys.dm_hadr_database_replica_states")
    check(cur.fetchall() == [("SYNCHRONIZED", 3), ("SYNCHRONIZED", 3)], "database replica states")
    try:
        cur.execute("ALTER AVAILABILITY GROUP AG1 FAILOVER")
        raise AssertionError("FAILOVER on the primary did not fail")
    except pytds.Error as e:
        check(e.msg_no == 41122, f"error number {e.msg_no}")
    print("ledger and AG statements OK")

with connect(False) as conn:
    cur = conn.cursor()
    cur.execute("INSERT INTO dbo.ledger (id, at) VALUES (%s, 40)", (4,))
    conn.rollback()
    cur.execute("INSERT INTO dbo.ledger (id, at) VALUES (%s, 50)", (5,))
    conn.commit()
    cur.execute("SELECT id FROM dbo.ledger WHERE id BETWEEN 4 AND 5")
    check(cur.fetchall() == [(5,)], "rolled back 4, committed 5")
    print("ledger transactions OK")
    put_state({"role": "SECONDARY"})

try:
    connect(True, pw="wrong")
    raise AssertionError("wrong password accepted")
except pytds.OperationalError as e:
    check(e.msg_no == 18456, f"error number {e.msg_no}")
    print("wrong password 18456 OK")

print("ALL OK")

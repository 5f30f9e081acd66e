"""python-tds client for tds-sim's permission test (tests/permissions.rs).

Usage: pytds_perms.py TDS_PORT ADMIN ADMIN_PASSWORD WATCHER WATCHER_PASSWORD. Prints one
"... OK" line per check and "ALL OK" at the end; a failed check raises (non-zero exit).
python-tds is imported unconditionally: a missing driver must fail the test, not skip it.
"""
import sys

import pytds

port, admin, admin_pw, watcher, watcher_pw = int(sys.argv[1]), *sys.argv[2:6]

HEALTH = (
    "SELECT @@SERVERNAME AS server_name, ars.role_desc AS role_desc\n"
    "FROM sys.dm_hadr_availability_replica_states AS ars\n"
    "JOIN sys.availability_groups AS ag ON ag.group_id = ars.group_id\n"
    "WHERE ars.is_local = 1 AND ag.name = N'AG1'"
)
HAS_PERMS = "SELECT CAST(HAS_PERMS_BY_NAME(%s, %s, %s) AS nvarchar(10)) AS granted"


def connect(user, pw):
    return pytds.connect(server="127.0.0.1", port=port, user=user, password=pw,
                         autocommit=True, login_timeout=5, timeout=5)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def refused(cur, sql, number, args=None):
    try:
        cur.execute(sql, args)
    except pytds.Error as e:
        check(e.msg_no == number, f"{sql!r}: error {e.msg_no}, expected {number}: {e}")
        return str(e)
    raise AssertionError(f"{sql!r} was not refused")


def has_perms(cur, securable, klass, perm):
    cur.execute(HAS_PERMS, (securable, klass, perm))
    return cur.fetchall()


with connect(watcher, watcher_pw) as w:
    cur = w.cursor()
    # python-tds raises with the last message's number (297) and every message's text.
    text = refused(cur, HEALTH, 297)
    check("VIEW SERVER PERFORMANCE STATE permission was denied on object 'server', "
          "database 'master'. The user does not have permission" in text, text)
    print("refused dmv 300+297 OK")
    check(has_perms(cur, None, None, "VIEW SERVER STATE") == [("0",)], "VIEW SERVER STATE")
    check(has_perms(cur, "AG1", "AVAILABILITY GROUP", "ALTER") == [("0",)], "ALTER")
    check(has_perms(cur, "nope", "AVAILABILITY GROUP", "ALTER") == [(None,)], "unknown AG")
    print("has_perms 0 OK")
    refused(cur, "ALTER AVAILABILITY GROUP [AG1] OFFLINE", 15151)
    print("alter ag 15151 OK")

    with connect(admin, admin_pw) as a:
        acur = a.cursor()
        acur.execute(f"GRANT VIEW SERVER STATE TO [{watcher}]")
        acur.execute(f"GRANT CONTROL ON AVAILABILITY GROUP::[AG1] TO [{watcher}]")
        print("grants OK")
        for perm in ("ALTER", "CONTROL", "VIEW DEFINITION", "ANY"):
            check(has_perms(cur, "ag1", "availability group", perm) == [("1",)], perm)
        check(has_perms(cur, None, None, "VIEW SERVER STATE") == [("1",)], "granted VSS")
        print("has_perms 1 OK")
        cur.execute(HEALTH)
        check(cur.fetchall() == [("SQL1", "PRIMARY")], "health rows")
        print("health rows OK")
        acur.execute(f"DENY ALTER ON AVAILABILITY GROUP::AG1 TO [{watcher}]")
        check(has_perms(cur, "AG1", "AVAILABILITY GROUP", "ALTER") == [("0",)], "denied ALTER")
        check(has_perms(cur, "AG1", "AVAILABILITY GROUP", "CONTROL") == [("1",)], "CONTROL kept")
        refused(cur, "ALTER AVAILABILITY GROUP AG1 SET (REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT = 0)", 15151)
        print("deny beats grant OK")

print("ALL OK")

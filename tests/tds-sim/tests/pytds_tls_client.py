# python-tds over TLS, for tds-sim's TLS test (tests/tls.rs).
# Usage: python3 pytds_tls_client.py PORT USER PASSWORD CAFILE EXPECT
#   CAFILE: a CA file (python-tds then sends ENCRYPT_ON and checks the certificate and the
#   host name), or "" for no TLS at all (ENCRYPT_NOT_SUP).
#   EXPECT: ok (log in and query), cert (the certificate check fails) or required (the
#   server requires encryption the client does not have).
# Prints "tls query OK" or "refused as expected: ..."; anything else exits non-zero.
import sys

import pytds

port, user, password, cafile, expect = sys.argv[1:6]
kw = dict(server="localhost", port=int(port), user=user, password=password,
          database="db1", login_timeout=10, timeout=10, autocommit=True)
if cafile:
    kw.update(cafile=cafile, validate_host=True)
try:
    with pytds.connect(**kw) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT @@SERVERNAME, 42")
            row = cur.fetchone()
except Exception as e:  # noqa: BLE001 - every failure is reported and judged below
    text = f"{type(e).__name__}: {e}"
    wanted = {"cert": "certificate verify failed", "required": "required by server"}.get(expect)
    if wanted is None or wanted not in text:
        print("FAILED:", text)
        sys.exit(1)
    print("refused as expected:", text)
    sys.exit(0)
if expect != "ok":
    print(f"FAILED: logged in, expected {expect}")
    sys.exit(1)
if row[0] != "SQL1" or row[1] != 42:
    print("FAILED: row", row)
    sys.exit(1)
print("tls query OK")

// jTDS (Debian libjtds-java) client for tds-sim's driver test (tests/drivers.rs).
// Usage: java -cp jtds.jar:. JtdsClient PORT USER PASSWORD
// Prints one "... OK" line per check and "ALL OK"; any failure throws (non-zero exit).
import java.sql.*;

public class JtdsClient {
    static void check(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    public static void main(String[] a) throws Exception {
        Class.forName("net.sourceforge.jtds.jdbc.Driver");
        String url = "jdbc:jtds:sqlserver://127.0.0.1:" + a[0] + "/db1;loginTimeout=5;socketTimeout=10";
        try (Connection c = DriverManager.getConnection(url, a[1], a[2])) {
            System.out.println("login OK");
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("SELECT @@SERVERNAME, @@SPID, @@MAX_PRECISION")) {
                check(rs.next(), "a row");
                check(rs.getString(1).equals("SQL1"), "server name " + rs.getString(1));
                check(rs.getInt(3) == 38, "max precision");
            }
            System.out.println("query OK");
            try (PreparedStatement p = c.prepareStatement("INSERT INTO dbo.ledger (id, at) VALUES (?, ?)")) {
                for (long id = 1; id <= 3; id++) {
                    p.setLong(1, id);
                    p.setLong(2, id * 10);
                    check(p.executeUpdate() == 1, "one row inserted");
                }
            }
            System.out.println("insert OK");
            try (PreparedStatement p = c.prepareStatement("SELECT COUNT(*), MAX(id) FROM dbo.ledger WHERE id BETWEEN ? AND ?")) {
                p.setLong(1, 2);
                p.setLong(2, 3);
                try (ResultSet rs = p.executeQuery()) {
                    check(rs.next(), "a row");
                    check(rs.getInt(1) == 2 && rs.getLong(2) == 3, "count and max " + rs.getInt(1) + " " + rs.getLong(2));
                }
            }
            System.out.println("parameterised select OK");
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                check(s.executeUpdate("INSERT INTO dbo.ledger (id, at) VALUES (4, 40)") == 1, "insert in a transaction");
            }
            c.commit();
            c.setAutoCommit(true);
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT COUNT(*) FROM dbo.ledger")) {
                check(rs.next() && rs.getInt(1) == 4, "four rows after commit");
            }
            System.out.println("transaction OK");
        }
        System.out.println("ALL OK");
    }
}

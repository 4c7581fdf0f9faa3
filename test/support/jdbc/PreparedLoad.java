// Load generator for prepared.test.ts: pgjdbc with prepareThreshold=1 through the pooler.
//
// Not built ahead of time: the test compiles this one file with `javac -cp <pgjdbc jar> -d <tmp>`
// (the jar comes from the local Maven repository, ~/.m2/repository/org/postgresql/postgresql/)
// and runs `java -cp <tmp>:<jar> PreparedLoad ...`. Nothing compiled is kept in the repository.
//
// With prepareThreshold=1 pgjdbc switches a PreparedStatement to a named server statement (S_1,
// S_2, ... per connection, so every client uses the same names for different texts) from its
// first execution; a small preparedStatementCacheQueries makes it evict and Close statements.
// Every client thread has its own connection and checks every result.
//
// Usage: java PreparedLoad URL USER PASSWORD CLIENTS STATEMENTS DISTINCT
// Prints one line: "ok=<n> errors=<n> pooler_statements=<n>", then the first errors; exit code 0
// only when every statement gave the expected answer.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicInteger;

public final class PreparedLoad {
  public static void main(String[] args) throws Exception {
    String url = args[0];
    String user = args[1];
    String password = args[2];
    int clients = Integer.parseInt(args[3]);
    int statements = Integer.parseInt(args[4]);
    int distinct = Integer.parseInt(args[5]);
    int per = statements / clients;

    AtomicInteger ok = new AtomicInteger();
    AtomicInteger poolerStatements = new AtomicInteger(-1);
    List<String> errors = Collections.synchronizedList(new ArrayList<>());
    List<Thread> threads = new ArrayList<>();
    for (int t = 0; t < clients; t++) {
      final int tid = t;
      Thread th = new Thread(() -> {
        Properties props = new Properties();
        props.setProperty("user", user);
        props.setProperty("password", password);
        props.setProperty("prepareThreshold", "1");
        props.setProperty("preparedStatementCacheQueries", String.valueOf(Math.max(2, distinct / 2)));
        props.setProperty("sslmode", "disable");
        props.setProperty("connectTimeout", "10");
        try (Connection conn = DriverManager.getConnection(url, props)) {
          List<PreparedStatement> stmts = new ArrayList<>();
          for (int k = 0; k < distinct; k++) {
            // The literal k makes `distinct` different texts; tid proves whose text ran.
            stmts.add(conn.prepareStatement("SELECT ?::int + " + k + " AS v, ?::text AS t, " + tid + " AS owner"));
          }
          for (int i = 0; i < per; i++) {
            int k = i % distinct;
            boolean txn = i % 50 == 49;
            try {
              if (txn) conn.setAutoCommit(false);
              PreparedStatement ps = stmts.get(k);
              ps.setInt(1, i);
              ps.setString(2, "j" + tid + "-" + i);
              try (ResultSet rs = ps.executeQuery()) {
                if (!rs.next()) throw new SQLException("no row");
                int v = rs.getInt(1);
                String s = rs.getString(2);
                int owner = rs.getInt(3);
                if (v != i + k || !s.equals("j" + tid + "-" + i) || owner != tid) {
                  throw new SQLException("client " + tid + " statement " + i + ": got " + v + "," + s + "," + owner);
                }
              }
              if (txn) {
                conn.commit();
                conn.setAutoCommit(true);
              }
              ok.incrementAndGet();
            } catch (SQLException e) {
              errors.add("client " + tid + " statement " + i + ": " + e.getSQLState() + " " + e.getMessage());
              try {
                if (!conn.getAutoCommit()) {
                  conn.rollback();
                  conn.setAutoCommit(true);
                }
              } catch (SQLException ignored) {
                // The error above is what matters.
              }
              if (errors.size() > 20) break;
            }
          }
          if (tid == 0) {
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'PGPOOL%'");
                ResultSet rs = ps.executeQuery()) {
              rs.next();
              poolerStatements.set(rs.getInt(1));
            }
          }
        } catch (SQLException e) {
          errors.add("client " + tid + ": " + e.getSQLState() + " " + e.getMessage());
        }
      });
      threads.add(th);
      th.start();
    }
    for (Thread th : threads) th.join();
    System.out.println("ok=" + ok.get() + " errors=" + errors.size() + " pooler_statements=" + poolerStatements.get());
    for (String e : errors.subList(0, Math.min(10, errors.size()))) System.out.println(e);
    System.exit(errors.isEmpty() && ok.get() == per * clients ? 0 : 1);
  }
}

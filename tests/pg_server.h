// A PostgreSQL server for tests of the registry's PostgreSQL backend (Debian's postgresql
// package, driven by tests/pg_server.sh).
//
// Where the server comes from, first match wins:
//  1. MODELPORT_TEST_PG: the conninfo of an existing server (a role that may CREATE DATABASE).
//  2. MODELPORT_TEST_PG_DIR: the state folder of the server that ctest's `pg_server` fixture
//     started once for the whole run (tests/CMakeLists.txt gives it to every test whose name
//     contains "postgres" or "Postgres", e.g. parameterized tests with a /postgresql suffix).
//  3. Otherwise (the test binary run by hand, or a test name without "postgres"): a server this
//     process starts on first use (about a second) and stops at exit; a watcher stops it too if
//     the process dies without running its exit handlers.
// Every call makes a fresh, empty database, so tests running at once never see each other's
// tables; databases made on a shared server are dropped at exit.
#pragma once

#include <gtest/gtest.h>

#include <string>

namespace mp::testing {

/// The conninfo ("host=... port=... user=... dbname=...") of a fresh database, or "" when
/// PostgreSQL tests cannot run here, with the reason in `*skip_reason` (server binaries absent).
/// A server that is installed but fails to start is a test failure (ADD_FAILURE), and "" too.
std::string PostgresConninfo(std::string* skip_reason = nullptr);

}  // namespace mp::testing

/// Declares `std::string var` holding PostgresConninfo(), or skips the test with the reason.
#define MP_POSTGRES_OR_SKIP(var)                                \
  std::string var;                                              \
  do {                                                          \
    std::string mp_pg_skip_reason_;                             \
    var = ::mp::testing::PostgresConninfo(&mp_pg_skip_reason_); \
    if (var.empty()) GTEST_SKIP() << mp_pg_skip_reason_;        \
  } while (0)

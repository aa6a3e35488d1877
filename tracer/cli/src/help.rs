//! Long help texts of the `tracer` program (shown after clap's own).

/// After `tracer --help`: exit codes and colour.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the target or a file refused: no such function, patching refused, unreadable file
  2  bad command line
  3  no traced process found or reachable
  `tracer run` exits with the command's own status.

Colour is used only on a terminal, never when NO_COLOR is set.";

/// After the help of the verbs that take patterns.
pub const PATTERNS: &str = "\
Patterns (terms separated by spaces or commas):
  parse_*            a glob (* and ?) without '::' matches a function's own name: its last
                     path segment without generic arguments or clone suffixes, so
                     'search_reader' selects every <S>::search_reader::<T> and
                     'f' selects f.isra.0 and f.constprop.1
  app::cache::*      with '::' the full path, also read without generic arguments and
                     with <T as Trait>::f read as T::f (so 'app::*' selects the methods and
                     trait impls of app's types)
  '* !slow_*'        a leading '!' removes; a pattern must add before it removes
  '\"<usize as core::fmt::Debug>::fmt\"'
                     a name in double quotes is taken literally, spaces and commas included;
                     a whole pattern that is exactly a name `tracer list` prints selects it";

/// After `tracer serve --help`: examples and the metrics.
pub const SERVE_HELP: &str = "\
Examples:
  tracer serve -p 1234 --listen 127.0.0.1:9464
  tracer serve --all --listen 127.0.0.1:9464 'app::*'

Metrics (labels function, pid, exe):
  tracer_function_calls_total          calls that returned
  tracer_function_duration_seconds     their durations (_bucket, _sum, _count; 1-2-5 buckets, 100 ns to 100 s)
  tracer_function_not_returned_total   calls that never returned (longjmp, entry-only)
  tracer_dropped_events_total          events lost to full rings (pid, exe): figures are low
  tracer_functions_left_out_total      functions beyond --max-functions (pid, exe)
  tracer_process_up                    1 while the process is read, 0 after it ended

Formats: Prometheus text, OpenMetrics, or protobuf with native histograms too
(schema 3: exact counts, quantiles within 9 %) when the scraper asks for it
(prometheus --enable-feature=native-histograms).

Only loopback addresses unless --allow-remote. With -p the last figures of an ended
process stay (tracer_process_up 0); with --all its series go.";

// A run row as the kernel sends it in page messages (run_table.record_to_row), for the
// render, panel and logic tests; `extra` overrides or adds fields.
export function row(runId, extra = {}) {
  return {
    run_id: runId,
    graph_id: "g",
    status: "running",
    session_id: null,
    tags: [],
    created_at: 100,
    started_at: 100,
    finished_at: null,
    error: null,
    traceback: null,
    parent_run_id: null,
    worker: null,
    ...extra,
  };
}

/* tests/status_docs/include/deepdefense/fixture.h -- a fixture for
 * tools/check_status_docs.py, never compiled or installed: each function
 * below documents its statuses wrongly in a different way, so the checker
 * must fail on this tree (ctest "status_docs_checker_fails"). */
/** Returns DD_OK, DD_ERR_INVALID_ARGUMENT (misses the status of its callee). */
DD_API dd_status dd_fx_missing(int x);
/** Returns DD_OK, DD_ERR_IO (the code cannot return DD_ERR_IO). */
DD_API dd_status dd_fx_extra(void);
/** Documents no status at all. */
DD_API dd_status dd_fx_none(void);

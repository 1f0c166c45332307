/* tests/docs/undocumented.h -- a fixture for tools/check_docs.sh, never
 * compiled or installed: each declaration below lacks its own doc comment
 * in a different way, so the checker must fail on this directory (ctest
 * "docs_checker_fails", WILL_FAIL). */
/** documents a() only */
DD_API int a(void);
DD_API int b(void);
/* a plain comment is not documentation */
DD_API int c(void);
typedef struct s { int x; /**< a member's comment */ } s;
DD_API int d(void);
/** documents the variable, not e() */ int v;
DD_API int e(void);

/* tests/status_docs/lib/fixture.c -- the code of fixture.h (see there). */
static dd_status check_state(int x)
{
    DD_RETURN_IF(x > 1, DD_ERR_STATE, "x = %d", x);
    return DD_OK;
}

dd_status dd_fx_missing(int x)
{
    DD_RETURN_IF(x < 0, DD_ERR_INVALID_ARGUMENT, "x = %d", x);
    DD_FORWARD(check_state(x));
    return DD_OK;
}

dd_status dd_fx_extra(void)
{
    return DD_OK;
}

dd_status dd_fx_none(void)
{
    return DD_ERROR(DD_ERR_UNSUPPORTED, "never");
}

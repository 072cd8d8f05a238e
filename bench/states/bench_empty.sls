# The floor for the state benchmark: one state that does nothing.
bench-empty-test-nop:
  test.nop

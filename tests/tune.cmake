# zinf plan / zinf tune (issue 8): the planner's figures against hand-computed ones and its
# configs through the loader (test_plan); a quick tune run in a temp folder, its fragment merged
# and loaded, and bad flags refused (test_tune).
zinf_add_test(test_plan SOURCES test_plan.c LIBS zinf_engine LABELS unit)
zinf_add_test(test_tune SOURCES test_tune.c LIBS zinf_bench zinf_engine zinf_cjson LABELS "unit;nvme")

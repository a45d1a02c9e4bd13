# CLI tests for the zinf command and `zinf bench io`.
#
# This file has two roles. Included from tests/CMakeLists.txt it registers the tests; run with
# `cmake -P` (as each test does) it is the test: it runs zinf, checks the exit code and the
# message (or the JSON), and fails with both printed. A test that cannot run here (io_uring
# refused, filesystem without O_DIRECT) prints "ZINF-SKIP: why"; SKIP_REGULAR_EXPRESSION makes
# ctest show it as skipped (CMake 3.25 scripts cannot exit 77 themselves).

if(NOT CMAKE_SCRIPT_MODE_FILE)
  set(_cli ${CMAKE_CURRENT_LIST_FILE})
  set(_tmp ${CMAKE_CURRENT_BINARY_DIR}/cli_tmp)
  function(zinf_cli_test name)
    cmake_parse_arguments(C "" "MODE;RC;MSG" "ARGS" ${ARGN})
    string(REPLACE ";" "|" _args "${C_ARGS}")
    add_test(NAME ${name}
             COMMAND ${CMAKE_COMMAND} -DZINF=$<TARGET_FILE:zinf> -DMODE=${C_MODE}
                     -DARGS=${_args} -DRC=${C_RC} -DMSG=${C_MSG} -DTMP=${_tmp}/${name}
                     -P ${_cli})
    set_tests_properties(${name} PROPERTIES LABELS unit TIMEOUT 300 SKIP_RETURN_CODE 77
                         SKIP_REGULAR_EXPRESSION "ZINF-SKIP:")
  endfunction()

  zinf_cli_test(cli_version MODE expect RC 0 MSG "^zinf [0-9]+\\.[0-9]+" ARGS --version)
  zinf_cli_test(cli_unknown_command MODE expect RC 2 MSG "unknown command 'frobnicate'"
                ARGS frobnicate)
  zinf_cli_test(cli_bench_io_help MODE expect RC 0 MSG "usage: zinf bench io --path DIR"
                ARGS bench io --help)
  zinf_cli_test(cli_train_gpu_mem_bad MODE expect RC 2
                MSG "--gpu_mem 'abc': not a size > 0; pass e.g. --gpu_mem 80G"
                ARGS train --gpu_mem abc)
  zinf_cli_test(cli_train_gpu_mem_cpu MODE expect RC 2
                MSG "--gpu_mem bounds the GPU memory of a GPU run, and this run is on the CPU \\(--device cpu\\)"
                ARGS train --gpu_mem 2G --device cpu)
  zinf_cli_test(cli_bench_io_size_zero MODE expect RC 2
                MSG "--size 0 is below the minimum 4096 \\(4 KiB\\): pass --size 4K or more"
                ARGS bench io --path @TMP@ --size 0)
  zinf_cli_test(cli_bench_io_bad_backend MODE expect RC 2
                MSG "--backend 'xyz' is not one of auto\\|io_uring\\|libaio\\|psync"
                ARGS bench io --path @TMP@ --backend xyz)
  zinf_cli_test(cli_bench_io_bad_queue_depth MODE expect RC 2
                MSG "--queue-depth 5000 is above the maximum 4096: pass --queue-depth 4096 or less"
                ARGS bench io --path @TMP@ --queue-depth 5000)
  zinf_cli_test(cli_bench_io_size_not_multiple MODE expect RC 2
                MSG "--size 3M is not a multiple of --block-size 2M: pass --size 2M"
                ARGS bench io --path @TMP@ --size 3M --block-size 2M)
  zinf_cli_test(cli_bench_io_unknown_flag MODE expect RC 2 MSG "unknown option '--frob'"
                ARGS bench io --path @TMP@ --frob)
  zinf_cli_test(cli_bench_io_missing_path MODE expect RC 1
                MSG "--path /nonexistent/zinf-no-such-dir: No such file or directory"
                ARGS bench io --path /nonexistent/zinf-no-such-dir --size 8M)
  zinf_cli_test(cli_bench_io_path_is_file MODE expect RC 1 MSG "is not a folder"
                ARGS bench io --path ${CMAKE_CURRENT_LIST_FILE} --size 8M)
  zinf_cli_test(cli_bench_io_no_space MODE expect RC 1 MSG "free but --size needs 1 PiB: pass a smaller --size \\(at most [0-9]+[KMGT]?\\)"
                ARGS bench io --path @TMP@ --size 1024T --block-size 256M --queue-depth 1)
  # Real runs: 8 MiB, checked through the JSON. One per backend, each a different rw.
  zinf_cli_test(cli_bench_io_json_uring_read MODE json ARGS --backend io_uring --rw read)
  zinf_cli_test(cli_bench_io_json_aio_randread MODE json
                ARGS --backend libaio --rw randread --block-size 64K --queue-depth 4)
  zinf_cli_test(cli_bench_io_json_psync_readwrite MODE json
                ARGS --backend psync --rw readwrite --threads 2 --loops 2 --small-pages)
  zinf_cli_test(cli_bench_io_json_uring_write MODE json ARGS --backend io_uring --rw write)
  # SIGTERM mid-run: exit 143 and no file left behind.
  zinf_cli_test(cli_bench_io_sigterm MODE signal)
  return()
endif()

# ---- script mode: one test ----
cmake_minimum_required(VERSION 3.24)
string(REPLACE "|" ";" ARGS "${ARGS}")
string(REPLACE "@TMP@" "${TMP}" ARGS "${ARGS}")
file(REMOVE_RECURSE "${TMP}")
file(MAKE_DIRECTORY "${TMP}")

function(leftovers out)
  file(GLOB _left "${TMP}/zinf-bench-io-*")
  set(${out} "${_left}" PARENT_SCOPE)
endfunction()

if(MODE STREQUAL "expect")
  execute_process(COMMAND ${ZINF} ${ARGS} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err)
  if(NOT rc STREQUAL "${RC}")
    message(FATAL_ERROR "zinf ${ARGS}: exit ${rc}, expected ${RC}\nstdout: ${out}\nstderr: ${err}")
  endif()
  if(NOT "${out}${err}" MATCHES "${MSG}")
    message(FATAL_ERROR "zinf ${ARGS}: output does not match '${MSG}'\nstdout: ${out}\nstderr: ${err}")
  endif()
  leftovers(left)
  if(left)
    message(FATAL_ERROR "zinf ${ARGS} left files behind: ${left}")
  endif()
  message(STATUS "ok: exit ${rc}, message matches")

elseif(MODE STREQUAL "json")
  set(size 8388608)
  execute_process(COMMAND ${ZINF} bench io --path ${TMP} --size 8M --json ${ARGS}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  leftovers(left)
  if(left)
    message(FATAL_ERROR "zinf bench io left files behind: ${left}\nstderr: ${err}")
  endif()
  if(rc EQUAL 1 AND err MATCHES "cannot start iosched")
    message(STATUS "ZINF-SKIP: the backend cannot start here: ${err}")
    return()
  endif()
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "zinf bench io ${ARGS}: exit ${rc}\nstdout: ${out}\nstderr: ${err}")
  endif()
  string(JSON direct ERROR_VARIABLE jerr GET "${out}" direct)
  if(jerr)
    message(FATAL_ERROR "stdout is not the expected JSON (${jerr}):\n${out}")
  endif()
  if(NOT direct)
    message(STATUS "ZINF-SKIP: ${TMP} does not support O_DIRECT (iosched fell back to buffered)")
    return()
  endif()
  foreach(key gb_per_s iops bytes wrong_blocks io_errors verified_blocks loops rw backend
          cpu_s_per_gb lat_p50_us lat_p99_us inflight_avg huge_pages)
    string(JSON ${key} ERROR_VARIABLE jerr GET "${out}" ${key})
    if(jerr)
      message(FATAL_ERROR "JSON has no '${key}': ${jerr}\n${out}")
    endif()
  endforeach()
  set(expect_loops 1)
  if(ARGS MATCHES "--loops;([0-9]+)")
    set(expect_loops ${CMAKE_MATCH_1})
  endif()
  math(EXPR expect_bytes "${size} * ${expect_loops}")
  list(FIND ARGS --backend bi)
  math(EXPR bi "${bi} + 1")
  list(GET ARGS ${bi} want_backend)
  set(problems "")
  if(NOT gb_per_s GREATER 0)
    string(APPEND problems "gb_per_s ${gb_per_s} is not > 0; ")
  endif()
  if(NOT iops GREATER 0)
    string(APPEND problems "iops ${iops} is not > 0; ")
  endif()
  if(NOT lat_p99_us GREATER 0 OR lat_p50_us GREATER lat_p99_us)
    string(APPEND problems "latency p50 ${lat_p50_us} / p99 ${lat_p99_us} is not plausible; ")
  endif()
  if(NOT bytes EQUAL expect_bytes)
    string(APPEND problems "bytes ${bytes} != ${expect_bytes}; ")
  endif()
  if(NOT wrong_blocks EQUAL 0 OR NOT io_errors EQUAL 0)
    string(APPEND problems "wrong_blocks ${wrong_blocks}, io_errors ${io_errors}; ")
  endif()
  if(ARGS MATCHES "--small-pages" AND huge_pages)
    string(APPEND problems "--small-pages given but huge_pages is ${huge_pages}; ")
  endif()
  if(NOT inflight_avg GREATER 0)
    string(APPEND problems "inflight_avg ${inflight_avg} is not > 0; ")
  endif()
  if(NOT backend STREQUAL want_backend)
    string(APPEND problems "backend ${backend}, asked for ${want_backend}; ")
  endif()
  if(rw MATCHES "read" AND NOT verified_blocks GREATER 0)
    string(APPEND problems "a ${rw} test verified no blocks; ")
  endif()
  if(rw STREQUAL "read" OR rw STREQUAL "randread")
    # Every block read is checked.
    list(FIND ARGS --block-size bsi)
    set(bs 1048576)
    if(bsi GREATER -1)
      math(EXPR bsi "${bsi} + 1")
      list(GET ARGS ${bsi} bs)
      string(REPLACE "K" "*1024" bs "${bs}")
      math(EXPR bs "${bs}")
    endif()
    math(EXPR nblocks "${expect_bytes} / ${bs}")
    if(NOT verified_blocks EQUAL nblocks)
      string(APPEND problems "verified_blocks ${verified_blocks} != ${nblocks}; ")
    endif()
  endif()
  if(problems)
    message(FATAL_ERROR "zinf bench io ${ARGS}: ${problems}\n${out}")
  endif()
  message(STATUS "ok: ${backend} ${rw} ${gb_per_s} GB/s, ${verified_blocks} blocks verified")

elseif(MODE STREQUAL "signal")
  # 64 MiB written 100000 times cannot finish before the signal.
  execute_process(
    COMMAND sh -c "\"$0\" bench io --path \"$1\" --size 64M --rw write --loops 100000 & p=$!; sleep 1; kill -TERM $p; wait $p; echo \"rc=$?\""
            ${ZINF} ${TMP}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  leftovers(left)
  if(left)
    message(FATAL_ERROR "SIGTERM left files behind: ${left}\n${out}${err}")
  endif()
  if(out MATCHES "rc=1" AND err MATCHES "cannot start iosched")
    message(STATUS "ZINF-SKIP: no backend starts here: ${err}")
    return()
  endif()
  if(NOT out MATCHES "rc=143" OR NOT err MATCHES "interrupted by SIGTERM; removed the test file")
    message(FATAL_ERROR "expected exit 143 and the interruption message:\n${out}\n${err}")
  endif()
  message(STATUS "ok: SIGTERM -> 143, file removed")
else()
  message(FATAL_ERROR "cli.cmake: unknown MODE '${MODE}'")
endif()

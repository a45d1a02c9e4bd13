# engine/data tests: shards, loader, tokenizers, default corpus (test_data, unit); the
# `zinf data` command (data_cli: this file run with `cmake -P`); and, with clang, a libFuzzer
# run over the shard parser and the loader seeded with tests/fixtures/data.

if(NOT CMAKE_SCRIPT_MODE_FILE)
  zinf_add_test(test_data SOURCES test_data.c LIBS zinf_engine LABELS unit)
  target_compile_definitions(test_data PRIVATE
                             ZINF_FIXTURES="${CMAKE_CURRENT_SOURCE_DIR}/fixtures/data")

  add_test(NAME data_cli
           COMMAND ${CMAKE_COMMAND} -DZINF=$<TARGET_FILE:zinf>
                   -DFIX=${CMAKE_CURRENT_SOURCE_DIR}/fixtures/data
                   -DTMP=${CMAKE_CURRENT_BINARY_DIR}/data_cli_tmp -P ${CMAKE_CURRENT_LIST_FILE})
  set_tests_properties(data_cli PROPERTIES LABELS unit TIMEOUT 60)

  if(CMAKE_C_COMPILER_ID MATCHES "Clang")
    # The sources are compiled into the harness so they carry the coverage instrumentation.
    set(_eng ${PROJECT_SOURCE_DIR}/engine)
    add_executable(fuzz_shard fuzz_shard.c ${_eng}/data.c ${_eng}/tokenize.c)
    target_include_directories(fuzz_shard PRIVATE ${_eng}/include ${_eng})
    target_link_libraries(fuzz_shard PRIVATE zinf_cjson)
    target_compile_options(fuzz_shard PRIVATE -fsanitize=fuzzer,address,undefined -UNDEBUG)
    target_link_options(fuzz_shard PRIVATE -fsanitize=fuzzer,address,undefined)
    file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fuzz_shard_corpus)
    add_test(NAME fuzz_shard
             COMMAND fuzz_shard -max_total_time=15 -timeout=5 -max_len=4096
                     ${CMAKE_CURRENT_BINARY_DIR}/fuzz_shard_corpus
                     ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/data)
    set_tests_properties(fuzz_shard PROPERTIES LABELS unit TIMEOUT 120)
  endif()
  return()
endif()

# ---- script mode: `zinf data` end to end ----
cmake_minimum_required(VERSION 3.24)
file(REMOVE_RECURSE "${TMP}")
file(MAKE_DIRECTORY "${TMP}")

function(step want_rc msg)
  execute_process(COMMAND ${ZINF} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err)
  if(NOT rc STREQUAL "${want_rc}")
    message(FATAL_ERROR "zinf ${ARGN}: exit ${rc}, expected ${want_rc}\nstdout: ${out}\nstderr: ${err}")
  endif()
  if(NOT "${out}${err}" MATCHES "${msg}")
    message(FATAL_ERROR "zinf ${ARGN}: output does not match '${msg}'\nstdout: ${out}\nstderr: ${err}")
  endif()
  message(STATUS "ok: zinf ${ARGN}")
endfunction()

# byte-level: 2 files of 27 bytes -> 54 tokens
step(0 "bytes.bin: 54 tokens \\(uint16, vocab 256, byte-level\\) from 2 file"
     data encode --text ${FIX}/hello.txt --text ${FIX}/hello.txt --out ${TMP}/bytes.bin)
step(0 "bytes.bin: ok, uint16 tokens \\(magic 20240520, version 1\\), 54 tokens, ids 10..119"
     data info ${TMP}/bytes.bin)
# GPT-2 BPE on the hand-made vocab: <|endoftext|> + "hello world!\n" + "hello's world\n"
#   = 17 | 11 14 15 16 18 | 11 19 20 14 15 18 -> 12 tokens, the last 3 (25%) to validation
step(0 "bpe.bin: 9 tokens \\(uint16, vocab 22, GPT-2 BPE\\).*val.bin: 3 tokens"
     data encode --text ${FIX}/hello.txt --out ${TMP}/bpe.bin --vocab ${FIX}/vocab.json
     --merges ${FIX}/merges.txt --val-fraction 0.25 --val-out ${TMP}/val.bin)
step(0 "bpe.bin: ok, uint16 tokens .*, 9 tokens, ids 11..20\n.*val.bin: ok, .*3 tokens, ids 14..18"
     data info ${TMP}/bpe.bin ${TMP}/val.bin)
step(1 "hex.txt: cannot open" data encode --text ${TMP}/hex.txt --out ${TMP}/x.bin)
file(WRITE ${TMP}/hex.txt "hex")
step(1 "the symbol of bytes \"x\".*not in vocab.json"
     data encode --text ${TMP}/hex.txt --out ${TMP}/x.bin --vocab ${FIX}/vocab.json
     --merges ${FIX}/merges.txt)
step(1 "short.bin: header says 10 tokens of 2 bytes, so the file should be 1044 bytes, but it is 1030 bytes \\(short by 14\\)"
     data info ${FIX}/u16.bin ${FIX}/short.bin)
step(1 "bad_magic.bin: bad magic 12345" data info ${FIX}/bad_magic.bin)
step(0 "corpus.txt: 2[0-9][0-9][0-9] bytes of default corpus"
     data corpus --out ${TMP}/corpus.txt --bytes 2000)
step(0 "usage: zinf data encode" data --help)
step(2 "needs --text FILE and --out SHARD" data encode --out ${TMP}/x.bin)
step(2 "--val-fraction and --val-out go together"
     data encode --text ${FIX}/hello.txt --out ${TMP}/x.bin --val-fraction 0.1)
step(2 "--val-fraction '2' must be a number in \\(0, 1\\)"
     data encode --text ${FIX}/hello.txt --out ${TMP}/x.bin --val-fraction 2 --val-out v)
step(2 "BPE needs both --vocab and --merges"
     data encode --text ${FIX}/hello.txt --out ${TMP}/x.bin --vocab ${FIX}/vocab.json)
step(2 "unknown subcommand 'frob'" data frob)
file(REMOVE_RECURSE "${TMP}")

// tb_one_layer: runs one layer through the generated vq4all engine ($readmemh form) and checks
// every result. Plain Verilog (Icarus: iverilog -g2012); no Python at simulation time.
//
// Stimulus (make_stimulus.py; docs/stream-protocol.md has the protocol): stimulus.vh, found on
// the include path (iverilog -I <stimulus folder>), gives the port widths, beat counts and the
// hex files' paths; the files hold the descriptor, the activation beats, the code beats and the
// expected results, in stream order, one word per line.
//
// Parameters:
//   ROM_FILE      the codebook .hex the engine's ROM loads: passed to the engine's top-level
//                 parameter ROM_INIT_FILE (relative to the folder vvp runs in)
//   RESULT_STALLS 1: results__ready held low for the first 40 cycles after reset, then high on
//                 one cycle in four (a fixed pattern, no randomness), so the result FIFO fills
//                 and the engine must stall its pipeline; 0: results__ready always high (full
//                 speed: the cycle count then equals the protocol's cycle model)
//   TIMEOUT       cycles after reset before the run is declared hung
//
// Output: one line per result ("row O: result R expected E cycle C", C counted from the
// descriptor's transfer = cycle 0), "cycles N" (descriptor transfer to last result, inclusive),
// then PASS, or FAIL with the reason and a non-zero exit ($fatal).
`timescale 1ns / 1ps
module tb_one_layer;
  parameter ROM_FILE = "rtl/codebook.hex";
  parameter RESULT_STALLS = 1;
  parameter TIMEOUT = 100000;
  `include "stimulus.vh"

  reg clk = 1'b0;
  reg rst = 1'b1;
  always #5 clk = ~clk;

  reg [LAYER_W-1:0]  layer_mem    [0:0];
  reg [ACTS_W-1:0]   acts_mem     [0:N_ACTS-1];
  reg [CODES_W-1:0]  codes_mem    [0:N_CODES-1];
  reg [RESULT_W-1:0] expected_mem [0:N_RESULTS-1];

  // beats transferred so far per stream; cycles since reset was released
  integer n_layer = 0, n_acts = 0, n_codes = 0, n_results = 0;
  integer cycle = 0, t_descriptor = -1, t_last = -1, errors = 0;
  // cycles in which a code beat waited although the layer was loaded and computing (after its
  // first code beat): the engine holds codes__ready low only while its result FIFO is full
  integer code_stalls = 0;

  // Each input stream presents its next word as soon as it has one and keeps valid high and the
  // payload unchanged until the beat transfers: valid depends on the beat counters only, never
  // on the engine's ready (the protocol's host rules 1 and 2).
  wire                layer_valid   = !rst && n_layer < 1;
  wire [LAYER_W-1:0]  layer_payload = layer_mem[0];
  wire                acts_valid    = !rst && n_acts < N_ACTS;
  wire [ACTS_W-1:0]   acts_payload  = acts_mem[n_acts < N_ACTS ? n_acts : 0];
  wire                codes_valid   = !rst && n_codes < N_CODES;
  wire [CODES_W-1:0]  codes_payload = codes_mem[n_codes < N_CODES ? n_codes : 0];
  wire results_ready = RESULT_STALLS ? (cycle >= 40 && cycle % 4 == 0) : 1'b1;

  wire layer_ready, acts_ready, codes_ready, results_valid, error;
  wire [RESULT_W-1:0] results_payload;
  wire [7:0] rejected;

  vq4all_engine #(.ROM_INIT_FILE(ROM_FILE)) dut (
    .clk(clk), .rst(rst),
    .layer__valid(layer_valid), .layer__ready(layer_ready), .layer__payload(layer_payload),
    .acts__valid(acts_valid), .acts__ready(acts_ready), .acts__payload(acts_payload),
    .codes__valid(codes_valid), .codes__ready(codes_ready), .codes__payload(codes_payload),
    .results__valid(results_valid), .results__ready(results_ready), .results__payload(results_payload),
    .error(error), .rejected(rejected)
  );

  initial begin
    $readmemh(LAYER_FILE, layer_mem);
    $readmemh(ACTS_FILE, acts_mem);
    $readmemh(CODES_FILE, codes_mem);
    $readmemh(EXPECTED_FILE, expected_mem);
    repeat (3) @(posedge clk);  // synchronous reset, held for three rising edges
    rst <= 1'b0;
  end

  // A beat transfers on a rising edge where valid and ready are both high; the values read here
  // are the ones before the edge (the engine's registers change through nonblocking assignments).
  always @(posedge clk) if (!rst) begin
    cycle <= cycle + 1;
    if (layer_valid && layer_ready) begin
      n_layer <= n_layer + 1;
      t_descriptor <= cycle;
    end
    if (acts_valid && acts_ready) n_acts <= n_acts + 1;
    if (codes_valid && codes_ready) n_codes <= n_codes + 1;
    if (n_codes > 0 && codes_valid && !codes_ready) code_stalls <= code_stalls + 1;
    if (results_valid && results_ready) begin
      if (n_results >= N_RESULTS) begin
        $display("FAIL: result %0d beyond the layer's %0d rows", n_results, N_RESULTS);
        $fatal(1);
      end
      // the payload port is a plain vector: $signed prints it as the two's-complement number it is
      if (results_payload === expected_mem[n_results])
        $display("row %0d: result %0d expected %0d cycle %0d", n_results, $signed(results_payload),
                 $signed(expected_mem[n_results]), cycle - t_descriptor);
      else begin
        $display("row %0d: result %0d expected %0d cycle %0d MISMATCH", n_results, $signed(results_payload),
                 $signed(expected_mem[n_results]), cycle - t_descriptor);
        errors <= errors + 1;
      end
      n_results <= n_results + 1;
      t_last <= cycle;
    end
    if (error || rejected != 0) begin
      $display("FAIL: the engine rejected the descriptor %h (error=%b rejected=%0d)", layer_mem[0], error, rejected);
      $fatal(1);
    end
    if (cycle >= TIMEOUT) begin
      $display("FAIL: timeout after %0d cycles: %0d/1 descriptor, %0d/%0d activation beats, %0d/%0d code beats, %0d/%0d results",
               cycle, n_layer, n_acts, N_ACTS, n_codes, N_CODES, n_results, N_RESULTS);
      $fatal(1);
    end
  end

  // done: every result in; then a few more cycles in which no extra result may appear
  initial begin
    wait (n_results == N_RESULTS);
    repeat (LAT + 8) @(posedge clk);
    if (n_results != N_RESULTS || n_acts != N_ACTS || n_codes != N_CODES) begin
      $display("FAIL: %0d results, %0d activation beats, %0d code beats taken (want %0d, %0d, %0d)",
               n_results, n_acts, n_codes, N_RESULTS, N_ACTS, N_CODES);
      $fatal(1);
    end
    $display("cycles %0d, code beats held off by result backpressure on %0d cycles", t_last - t_descriptor + 1,
             code_stalls);
    if (errors != 0) begin
      $display("FAIL: %0d of %0d results differ from expected", errors, N_RESULTS);
      $fatal(1);
    end
    $display("PASS: %0d results match", N_RESULTS);
    $finish;
  end
endmodule

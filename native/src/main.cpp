// datatools-flow: RGB frames and optical flow of videos, denseflow-compatible command line,
// datatools' output contract (see datatools/extract/ and ../shared/docs/ARCHITECTURE.md):
//   img_NNNNN.jpg (BGR, JPEG q95), flow_x_NNNNN.jpg / flow_y_NNNNN.jpg (one channel, q95),
//   flow clipped to +-bound and quantized as round-half-even(255 * (v + b) / 2b), 0 -> 128;
//   N decoded frames give N images and N-1 flow pairs; names start at --start-index (0, as
//   denseflow; 1 for MMAction2).
//
// Work is a pipeline of threads: one decodes (and resizes, converts to gray), --threads
// compute flow for consecutive pairs (each with its own algorithm instance), and the same
// threads encode and write (with --threads 1, one thread does it all in turn). Frames stream
// through a bounded window: memory does not grow with the length of the video, and no frame
// is dropped at the end (denseflow #33/#60 lost the last batch of long videos).

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/video.hpp>

#include "tvl1.hpp"

#ifdef DATATOOLS_WITH_CUDA
#include <opencv2/cudaoptflow.hpp>
#endif

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/display.h>
#include <libswscale/swscale.h>
}

#include <jpeglib.h>
#ifndef JCS_EXTENSIONS
#error "datatools-flow needs libjpeg-turbo's jpeglib.h (Debian/Ubuntu: libjpeg-dev or libjpeg-turbo8-dev)"
#endif

#include <atomic>
#include <cerrno>
#include <cfenv>
#include <cmath>
#include <condition_variable>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

namespace {

struct Options {
    std::vector<std::string> inputs;  // videos (a .txt input lists one per line)
    std::string out_dir = ".";
    std::string algorithm = "tvl1";   // tvl1, farn (brox: CUDA only)
    double bound = 20.0;
    int step = 1;                     // 0: RGB frames only; 1: flow between consecutive frames
    int new_width = 0, new_height = 0, new_short = 0;
    int start_index = 0;
    int quality = 95;
    int threads = 0;                  // 0: hardware concurrency
    bool flow_only = false;
    bool force = false;
    bool verbose = false;
    bool list_input = false;
    bool serve = false;               // read "VIDEO<TAB>OUT" lines from stdin, one result line each
    bool show_params = false;         // print the TV-L1 parameters in use as JSON, then exit
    bool show_build = false;          // print what this build computes with as JSON, then exit
    tvl1::Params tvl1;                // --tvl1 tau=..,lambda=..,... (datatools/extract/tvl1.py)
};

[[noreturn]] void usage_error(const std::string& msg) {
    std::cerr << "datatools-flow: " << msg << "\n"
              << "usage: datatools-flow VIDEO|LIST.txt [-o OUT] [-a tvl1|farn] [-b BOUND] [-s STEP]\n"
              << "       [-nw W -nh H | -ns SHORT] [--start-index 0|1] [--quality Q] [--threads N]\n"
              << "       [--flow-only] [-f] [-v]   (denseflow's -key=value spelling works too)\n"
              << "       [--tvl1 tau=T,lambda=L,theta=H,epsilon=E,scale_step=S,scales=N,warps=N,\n"
              << "               inner=N,outer=N,median=K] [--show-params]\n"
              << "       datatools-flow --serve [options]   (stdin: VIDEO<TAB>OUT_DIR per line)\n";
    std::exit(2);
}

int to_int(const std::string& key, const std::string& v) {
    char* end = nullptr;
    long x = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end) usage_error(key + " expects a whole number, got '" + v + "'");
    return static_cast<int>(x);
}

double to_double(const std::string& key, const std::string& v) {
    char* end = nullptr;
    double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end) usage_error(key + " expects a number, got '" + v + "'");
    return x;
}

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// "tau=0.25,lambda=0.15,..." into the parameters; every key must be known.
void parse_tvl1(const std::string& text, tvl1::Params& p) {
    size_t start = 0;
    while (start <= text.size()) {
        size_t end = text.find(',', start);
        if (end == std::string::npos) end = text.size();
        std::string item = text.substr(start, end - start);
        start = end + 1;
        if (item.empty()) continue;
        size_t eq = item.find('=');
        if (eq == std::string::npos) usage_error("--tvl1 expects key=value items, got '" + item + "'");
        std::string key = item.substr(0, eq), value = item.substr(eq + 1);
        const std::string what = "--tvl1 " + key;
        if (key == "tau") p.tau = to_double(what, value);
        else if (key == "lambda") p.lambda = to_double(what, value);
        else if (key == "theta") p.theta = to_double(what, value);
        else if (key == "epsilon") p.epsilon = to_double(what, value);
        else if (key == "scale_step") p.scale_step = to_double(what, value);
        else if (key == "scales") p.scales = to_int(what, value);
        else if (key == "warps") p.warps = to_int(what, value);
        else if (key == "inner") p.inner = to_int(what, value);
        else if (key == "outer") p.outer = to_int(what, value);
        else if (key == "median") p.median = to_int(what, value);
        else usage_error("--tvl1: unknown parameter '" + key + "'");
    }
    if (p.tau <= 0 || p.theta <= 0 || p.lambda <= 0 || p.epsilon <= 0)
        usage_error("--tvl1: tau, lambda, theta and epsilon must be positive");
    if (p.scale_step <= 0 || p.scale_step >= 1) usage_error("--tvl1: scale_step must be in (0, 1)");
    if (p.scales < 1 || p.warps < 1 || p.inner < 1 || p.outer < 1)
        usage_error("--tvl1: scales, warps, inner and outer must be at least 1");
    if (p.median < 1 || p.median % 2 == 0) usage_error("--tvl1: median must be an odd size");
}

void print_params(const tvl1::Params& p) {
    std::printf("{\"tau\": %.17g, \"lambda\": %.17g, \"theta\": %.17g, \"epsilon\": %.17g, "
                "\"scale_step\": %.17g, \"scales\": %d, \"warps\": %d, \"inner\": %d, "
                "\"outer\": %d, \"median\": %d}\n",
                p.tau, p.lambda, p.theta, p.epsilon, p.scale_step, p.scales, p.warps, p.inner,
                p.outer, p.median);
}

Options parse(int argc, char** argv) {
    Options o;
    static const std::map<std::string, std::string> alias = {
        {"-o", "out"}, {"--outputDir", "out"}, {"-a", "algorithm"}, {"--algorithm", "algorithm"},
        {"-b", "bound"}, {"--bound", "bound"}, {"-s", "step"}, {"--step", "step"},
        {"-nw", "nw"}, {"--newWidth", "nw"}, {"-nh", "nh"}, {"--newHeight", "nh"},
        {"-ns", "ns"}, {"--newShort", "ns"}, {"--start-index", "start"}, {"--quality", "quality"},
        {"--threads", "threads"}, {"--tvl1", "tvl1"}};
    static const std::map<std::string, std::string> flags = {
        {"-v", "verbose"}, {"--verbose", "verbose"}, {"-f", "force"}, {"--force", "force"},
        {"--flow-only", "flow_only"}, {"--serve", "serve"}, {"--show-params", "show_params"},
        {"--show-build", "show_build"}};
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i], value;
        bool inline_value = false;
        auto eq = arg.find('=');
        if (arg.rfind("-", 0) == 0 && eq != std::string::npos) {  // denseflow: -b=20
            value = arg.substr(eq + 1);
            arg = arg.substr(0, eq);
            inline_value = true;
        }
        if (flags.count(arg)) {
            const std::string& f = flags.at(arg);
            bool on = !inline_value || (value != "0" && value != "false");
            if (f == "verbose") o.verbose = on;
            if (f == "force") o.force = on;
            if (f == "flow_only") o.flow_only = on;
            if (f == "serve") o.serve = on;
            if (f == "show_params") o.show_params = on;
            if (f == "show_build") o.show_build = on;
            continue;
        }
        if (alias.count(arg)) {
            if (!inline_value) {
                if (i + 1 >= argc) usage_error(arg + " needs a value");
                value = argv[++i];
            }
            const std::string& k = alias.at(arg);
            if (k == "out") o.out_dir = value;
            else if (k == "algorithm") o.algorithm = value;
            else if (k == "bound") o.bound = to_double(arg, value);
            else if (k == "step") o.step = to_int(arg, value);
            else if (k == "nw") o.new_width = to_int(arg, value);
            else if (k == "nh") o.new_height = to_int(arg, value);
            else if (k == "ns") o.new_short = to_int(arg, value);
            else if (k == "start") o.start_index = to_int(arg, value);
            else if (k == "quality") o.quality = to_int(arg, value);
            else if (k == "threads") o.threads = to_int(arg, value);
            else if (k == "tvl1") parse_tvl1(value, o.tvl1);
            continue;
        }
        if (arg == "-h" || arg == "--help") usage_error("help");
        if (arg.rfind("-", 0) == 0) usage_error("unknown option " + arg);
        o.inputs.push_back(arg);
    }
    if (o.show_params) {
        print_params(o.tvl1);
        std::exit(0);
    }
    if (o.show_build) {
        // The driver routes a CUDA build's work to GPU workers and records it with the flow's
        // parameters: OpenCV's CUDA TV-L1 has no median filter and another iteration scheme.
#ifdef DATATOOLS_WITH_CUDA
        std::printf("{\"cuda\": true}\n");
#else
        std::printf("{\"cuda\": false}\n");
#endif
        std::exit(0);
    }
    if (o.serve ? !o.inputs.empty() : o.inputs.size() != 1)
        usage_error(o.serve ? "--serve reads its videos from stdin" : "give one video or one list file");
    if (o.algorithm != "tvl1" && o.algorithm != "farn" && o.algorithm != "brox")
        usage_error("-a must be tvl1, farn or brox");
    if (o.bound <= 0) usage_error("-b must be positive");
    if (o.step < 0 || o.step > 1) usage_error("-s must be 0 (frames only) or 1");
    if ((o.new_width > 0) != (o.new_height > 0)) usage_error("-nw and -nh go together");
    if (o.new_short > 0 && o.new_width > 0) usage_error("-ns excludes -nw/-nh");
    if (o.quality < 1 || o.quality > 100) usage_error("--quality must be 1..100");
    if (!o.serve && ends_with(o.inputs[0], ".txt")) {
        o.list_input = true;
        std::ifstream list(o.inputs[0]);
        if (!list) usage_error("cannot read list " + o.inputs[0]);
        std::vector<std::string> videos;
        for (std::string line; std::getline(list, line);) {
            while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
            if (!line.empty()) videos.push_back(line.substr(0, line.find(' ')));
        }
        o.inputs = videos;
    }
    if (o.threads <= 0) o.threads = std::max(1u, std::thread::hardware_concurrency());
    return o;
}

// Same rule as datatools.extract.options.output_size: exact -nw/-nh; -ns scales the short side
// to N, the long side to round-half-up(long * N / short), never upscaling.
cv::Size output_size(int w, int h, const Options& o) {
    if (o.new_width > 0) return {o.new_width, o.new_height};
    if (o.new_short <= 0 || std::min(w, h) <= o.new_short) return {w, h};
    int n = o.new_short;
    if (w <= h) return {n, static_cast<int>(static_cast<double>(h) * n / w + 0.5)};
    return {static_cast<int>(static_cast<double>(w) * n / h + 0.5), n};
}

std::string stem_of(const std::string& path) {
    auto slash = path.find_last_of('/');
    std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    auto dot = name.find_last_of('.');
    return dot == std::string::npos ? name : name.substr(0, dot);
}

void make_dirs(const std::string& path) {
    std::string part;
    for (size_t i = 0; i <= path.size(); ++i) {
        if (i == path.size() || path[i] == '/') {
            if (!part.empty() && mkdir(part.c_str(), 0755) != 0 && errno != EEXIST)
                throw std::runtime_error("cannot create " + part + ": " + std::strerror(errno));
        }
        if (i < path.size()) part += path[i];
    }
}

std::string frame_name(const char* prefix, int index) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s_%05d.jpg", prefix, index);
    return buf;
}

void write_file(const std::string& path, const std::vector<uchar>& data) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
    size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0) {
            ::close(fd);
            throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
        }
        done += static_cast<size_t>(n);
    }
    ::close(fd);
}

struct JpegError {
    jpeg_error_mgr mgr;
    std::jmp_buf jump;
};

// A picture in JPEG's own terms: full-range Y, Cb, Cr, chroma at half width and height (4:2:0,
// what the encoder makes of BGR by default). Rows are padded to whole 8x8 blocks with their
// last pixel, as libjpeg pads a BGR image; rows below the picture repeat its last row.
struct JpegPlanes {
    int width = 0, height = 0;
    int stride = 0;             // of Y; Cb and Cr: stride / 2
    std::vector<uchar> data;    // Y (height rows), Cb, Cr (ceil(height / 2) rows each)
    bool empty() const { return data.empty(); }
    size_t offset(int plane, int y) const {  // of row y of plane 0 (Y), 1 (Cb) or 2 (Cr)
        if (plane == 0) return static_cast<size_t>(y) * stride;
        return static_cast<size_t>(height) * stride +
               static_cast<size_t>((plane - 1) * ((height + 1) / 2) + y) * (stride / 2);
    }
};

// libjpeg(-turbo) directly, into memory; `feed` hands it the picture once compression started.
template <class Feed>
std::vector<uchar> compress(int width, int height, int components, J_COLOR_SPACE space, bool raw,
                            int quality, Feed feed) {
    jpeg_compress_struct c;
    JpegError err;
    c.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = [](j_common_ptr info) {
        std::longjmp(reinterpret_cast<JpegError*>(info->err)->jump, 1);
    };
    unsigned char* mem = nullptr;
    unsigned long size = 0;
    if (setjmp(err.jump)) {
        jpeg_destroy_compress(&c);
        std::free(mem);
        throw std::runtime_error("JPEG encoding failed");
    }
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &mem, &size);
    c.image_width = static_cast<JDIMENSION>(width);
    c.image_height = static_cast<JDIMENSION>(height);
    c.input_components = components;
    c.in_color_space = space;
    jpeg_set_defaults(&c);  // for BGR and YCbCr input alike: YCbCr 4:2:0, the same tables
    jpeg_set_quality(&c, quality, TRUE);
    c.raw_data_in = raw ? TRUE : FALSE;
    jpeg_start_compress(&c, TRUE);
    feed(c);
    jpeg_finish_compress(&c);
    std::vector<uchar> out(mem, mem + size);
    jpeg_destroy_compress(&c);
    std::free(mem);
    return out;
}

// A BGR or one-channel image: the bytes cv::imencode writes (same library, same defaults:
// 4:2:0, accurate DCT, no optimized tables), a quarter less CPU than Debian's OpenCV 4.6
// imencode spends around it (0.31-0.37 against 0.42-0.51 ms a 340x256 frame, measured in one
// process over test.mp4's 300 frames).
std::vector<uchar> encode_jpeg(const cv::Mat& image, int quality) {
    CV_Assert(image.type() == CV_8UC3 || image.type() == CV_8UC1);
    const bool color = image.channels() == 3;
    return compress(image.cols, image.rows, image.channels(), color ? JCS_EXT_BGR : JCS_GRAYSCALE,
                    false, quality, [&](jpeg_compress_struct& c) {
        while (c.next_scanline < c.image_height) {
            JSAMPROW row = const_cast<uchar*>(image.ptr<uchar>(static_cast<int>(c.next_scanline)));
            jpeg_write_scanlines(&c, &row, 1);
        }
    });
}

// Y, Cb, Cr planes as they are (libjpeg's raw data input): no conversion to BGR and back.
std::vector<uchar> encode_jpeg(const JpegPlanes& p, int quality) {
    return compress(p.width, p.height, 3, JCS_YCbCr, true, quality, [&](jpeg_compress_struct& c) {
        // One MCU row a call: 16 rows of Y, 8 of Cb and of Cr. libjpeg only reads them.
        auto row = [&](int plane, int y) { return const_cast<uchar*>(p.data.data() + p.offset(plane, y)); };
        JSAMPROW rows[3][16];
        JSAMPARRAY planes[3] = {rows[0], rows[1], rows[2]};
        const int chroma_rows = (p.height + 1) / 2;
        while (c.next_scanline < c.image_height) {
            const int y0 = static_cast<int>(c.next_scanline);
            for (int i = 0; i < 16; ++i) rows[0][i] = row(0, std::min(y0 + i, p.height - 1));
            for (int i = 0; i < 8; ++i) {
                rows[1][i] = row(1, std::min(y0 / 2 + i, chroma_rows - 1));
                rows[2][i] = row(2, std::min(y0 / 2 + i, chroma_rows - 1));
            }
            jpeg_write_raw_data(&c, planes, 16);
        }
    });
}

void write_jpeg(const std::string& path, const cv::Mat& image, int quality) {
    write_file(path, encode_jpeg(image, quality));
}

// denseflow's CAST: clip to [-b, b], 255 * (v - L) / (H - L) in double, round half to even.
cv::Mat quantize(const cv::Mat& component, double bound) {
    cv::Mat out(component.size(), CV_8UC1);
    const double lo = -bound, hi = bound;
    for (int y = 0; y < component.rows; ++y) {
        const float* src = component.ptr<float>(y);
        uchar* dst = out.ptr<uchar>(y);
        for (int x = 0; x < component.cols; ++x) {
            double v = std::min(hi, std::max(lo, static_cast<double>(src[x])));
            dst[x] = static_cast<uchar>(std::nearbyint(255.0 * (v - lo) / (hi - lo)));
        }
    }
    return out;
}

// One flow algorithm instance per thread (OpenCV's are not thread-safe).
class Flow {
  public:
    Flow(const std::string& algorithm, const tvl1::Params& params)
        : algorithm_(algorithm), params_(params) {
#ifdef DATATOOLS_WITH_CUDA
        if (algorithm == "tvl1") {
            // OpenCV's CUDA test matches the CPU result with these iteration settings.
            const tvl1::Params& p = params;
            cuda_tvl1_ = cv::cuda::OpticalFlowDual_TVL1::create(p.tau, p.lambda, p.theta, p.scales, p.warps,
                                                                p.epsilon, p.inner * p.outer, p.scale_step,
                                                                0.0, false);
            return;
        }
        if (algorithm == "brox") {
            cuda_brox_ = cv::cuda::BroxOpticalFlow::create(0.197, 50.0, 0.8, 10, 77, 10);
            return;
        }
#endif
        if (algorithm == "brox")
            throw std::runtime_error("-a brox needs OpenCV with CUDA (cudaoptflow); use tvl1 or farn");
    }

    cv::Mat compute(const cv::Mat& prev, const cv::Mat& next) {
        cv::Mat flow;
#ifdef DATATOOLS_WITH_CUDA
        if (cuda_tvl1_ || cuda_brox_) {
            cv::cuda::GpuMat a(prev), b(next), f;
            if (cuda_brox_) {
                cv::cuda::GpuMat af, bf;
                a.convertTo(af, CV_32F, 1.0 / 255);
                b.convertTo(bf, CV_32F, 1.0 / 255);
                cuda_brox_->calc(af, bf, f);
            } else {
                cuda_tvl1_->calc(a, b, f);
            }
            f.download(flow);
            return flow;
        }
#endif
        if (algorithm_ == "tvl1") {
            flow = tvl1::flow(prev, next, params_);  // tvl1.hpp: why not OpenCV 4.6's optflow
        } else {
            cv::calcOpticalFlowFarneback(prev, next, flow, 0.5, 3, 15, 3, 5, 1.2, 0);
        }
        return flow;
    }

  private:
    std::string algorithm_;
    tvl1::Params params_;
#ifdef DATATOOLS_WITH_CUDA
    cv::Ptr<cv::cuda::OpticalFlowDual_TVL1> cuda_tvl1_;
    cv::Ptr<cv::cuda::BroxOpticalFlow> cuda_brox_;
#endif
};

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// With AVX2, 8 pixels a step instead of 4 (16 against 64 us a 340x256 frame here); the
// default clone runs on any x86-64.
#define DATATOOLS_WIDE_SIMD __attribute__((target_clones("avx2", "default")))
#else
#define DATATOOLS_WIDE_SIMD
#endif

// Limited ("TV") range to JPEG's full range, to the nearest level: Y 16..235 -> 0..255,
// Cb/Cr 16..240 -> 0..255 around 128 (scale16: 65536 * 255/219 or 255/224). The BGR path
// (swscale to BGR, libjpeg back to YCbCr) computes the same, with two roundings in between.
DATATOOLS_WIDE_SIMD
void expand_range(const uchar* src, uchar* dst, int n, int offset, int scale16, int add) {
    for (int x = 0; x < n; ++x) {
        const int v = (((src[x] - offset) * scale16 + (1 << 15)) >> 16) + add;
        dst[x] = static_cast<uchar>(v < 0 ? 0 : v > 255 ? 255 : v);
    }
}

// A decoded frame: BGR pixels, or JPEG planes where the frame goes straight to an RGB image.
struct Picture {
    cv::Mat bgr;
    JpegPlanes planes;
};

// Decoding with FFmpeg's libraries directly, one thread: the Python backend's reader does the
// same through OpenCV (CAP_PROP_N_THREADS=1), and OpenCV < 4.7 (Debian 12 ships 4.6) would
// start a decoding thread per core in every worker, which costs 30 % more CPU per frame when
// the workers already fill the cores. Frames are converted to BGR24 with the same swscale
// flag OpenCV's reader uses (SWS_BICUBIC), so they are the same pixels.
class Decoder {
  public:
    explicit Decoder(const std::string& path) : path_(path) {
        if (avformat_open_input(&fmt_, path.c_str(), nullptr, nullptr) < 0)
            throw std::runtime_error("cannot open video " + path);
        if (avformat_find_stream_info(fmt_, nullptr) < 0) fail("cannot read the stream info");
        const AVCodec* codec = nullptr;
        stream_ = av_find_best_stream(fmt_, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
        if (stream_ < 0 || !codec) fail("no video stream");
        ctx_ = avcodec_alloc_context3(codec);
        avcodec_parameters_to_context(ctx_, fmt_->streams[stream_]->codecpar);
        ctx_->thread_count = 1;
        if (avcodec_open2(ctx_, codec, nullptr) < 0) fail("cannot open the decoder");
        rotation_ = display_rotation(fmt_->streams[stream_]);
        packet_ = av_packet_alloc();
        frame_ = av_frame_alloc();
    }
    ~Decoder() {
        sws_freeContext(sws_);
        av_frame_free(&frame_);
        av_packet_free(&packet_);
        avcodec_free_context(&ctx_);
        avformat_close_input(&fmt_);
    }
    Decoder(const Decoder&) = delete;
    Decoder& operator=(const Decoder&) = delete;

    // The next frame, or false at the end. Damaged packets are skipped, as OpenCV does.
    // RGB-only work at the video's own size takes the decoder's 4:2:0 planes straight to
    // JPEG (a fifth less CPU for the image than swscale to BGR plus libjpeg back to YCbCr);
    // everything else gets BGR, as the Python backend's reader gives it.
    bool read(Picture& pic, const Options& o) {
        for (;;) {
            int r = avcodec_receive_frame(ctx_, frame_);
            if (r == 0) {
                const int w = frame_->width, h = frame_->height;
                const bool planar = frame_->format == AV_PIX_FMT_YUV420P || frame_->format == AV_PIX_FMT_YUVJ420P;
                if (o.step == 0 && planar && rotation_ == 0 && output_size(w, h, o) == cv::Size(w, h)) {
                    to_planes(pic.planes);
                    pic.bgr.release();
                } else {
                    to_bgr(pic.bgr);
                    rotate(pic.bgr);
                    pic.planes.data.clear();
                }
                return true;
            }
            if (r == AVERROR_EOF) return false;
            if (r != AVERROR(EAGAIN)) fail("decoding failed");
            if (draining_) return false;
            r = av_read_frame(fmt_, packet_);
            if (r < 0) {  // end of the file: drain the frames the decoder still holds
                avcodec_send_packet(ctx_, nullptr);
                draining_ = true;
                continue;
            }
            if (packet_->stream_index == stream_) avcodec_send_packet(ctx_, packet_);
            av_packet_unref(packet_);
        }
    }

  private:
    [[noreturn]] void fail(const std::string& what) { throw std::runtime_error(path_ + ": " + what); }

    // Phone videos store the picture as the sensor saw it plus a display matrix. OpenCV's reader
    // (the Python backend) turns the frames as the matrix says; so does this, or a rotated
    // video would come out in other sizes from the two backends.
    static int display_rotation(const AVStream* st) {
        const uint8_t* matrix = nullptr;
#if LIBAVFORMAT_VERSION_INT >= AV_VERSION_INT(60, 15, 100)
        const AVPacketSideData* sd = av_packet_side_data_get(
            st->codecpar->coded_side_data, st->codecpar->nb_coded_side_data, AV_PKT_DATA_DISPLAYMATRIX);
        if (sd) matrix = sd->data;
#else
        matrix = av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, nullptr);
#endif
        if (!matrix) return 0;
        // av_display_rotation_get: counter-clockwise degrees; the display turns clockwise by its negative.
        int degrees = -static_cast<int>(std::lround(av_display_rotation_get(reinterpret_cast<const int32_t*>(matrix))));
        return ((degrees % 360) + 360) % 360;
    }

    void rotate(cv::Mat& bgr) const {
        if (rotation_ == 90) cv::rotate(bgr, bgr, cv::ROTATE_90_CLOCKWISE);
        else if (rotation_ == 180) cv::rotate(bgr, bgr, cv::ROTATE_180);
        else if (rotation_ == 270) cv::rotate(bgr, bgr, cv::ROTATE_90_COUNTERCLOCKWISE);
    }

    void to_bgr(cv::Mat& bgr) {
        const int w = frame_->width, h = frame_->height;
        // Like OpenCV's reader: convert the coded size (H.264 codes 340x256 as 352x256 and
        // crops), then keep the picture. The chroma interpolation at the right and bottom
        // edges then sees the coded pixels, as it does there.
        const int cw = std::max(w, ctx_->coded_width), ch = std::max(h, ctx_->coded_height);
        sws_ = sws_getCachedContext(sws_, cw, ch, static_cast<AVPixelFormat>(frame_->format), cw, ch,
                                    AV_PIX_FMT_BGR24, SWS_BICUBIC, nullptr, nullptr, nullptr);
        if (!sws_) fail("cannot convert the frame format to BGR");
        // swscale's SIMD paths write whole blocks: rows start 64-byte aligned.
        const int row = (cw * 3 + 63) & ~63;
        cv::Mat storage(ch, row, CV_8UC1);
        uint8_t* dst[4] = {storage.data, nullptr, nullptr, nullptr};
        int stride[4] = {row, 0, 0, 0};
        sws_scale(sws_, frame_->data, frame_->linesize, 0, ch, dst, stride);
        bgr = storage(cv::Rect(0, 0, w * 3, h)).reshape(3);
    }

    // 4:2:0 planes as JPEG stores them: full range, rows padded to whole blocks. Full range
    // is taken from the pixel format, as swscale takes it for the BGR path (yuvj420p).
    void to_planes(JpegPlanes& p) const {
        static const int luma_scale = static_cast<int>(std::lround(65536.0 * 255 / 219));
        static const int chroma_scale = static_cast<int>(std::lround(65536.0 * 255 / 224));
        const bool full = frame_->format == AV_PIX_FMT_YUVJ420P;
        p.width = frame_->width;
        p.height = frame_->height;
        p.stride = (p.width + 15) & ~15;
        const int cw = (p.width + 1) / 2, ch = (p.height + 1) / 2;
        p.data.resize(static_cast<size_t>(p.height) * p.stride + static_cast<size_t>(2 * ch) * (p.stride / 2));
        for (int plane = 0; plane < 3; ++plane) {
            const int w = plane ? cw : p.width, rows = plane ? ch : p.height;
            const int padded = plane ? p.stride / 2 : p.stride;
            for (int y = 0; y < rows; ++y) {
                const uchar* src = frame_->data[plane] + static_cast<ptrdiff_t>(y) * frame_->linesize[plane];
                uchar* dst = p.data.data() + p.offset(plane, y);
                if (full) std::memcpy(dst, src, w);
                else if (plane == 0) expand_range(src, dst, w, 16, luma_scale, 0);
                else expand_range(src, dst, w, 128, chroma_scale, 128);
                std::memset(dst + w, dst[w - 1], padded - w);
            }
        }
    }

    std::string path_;
    AVFormatContext* fmt_ = nullptr;
    AVCodecContext* ctx_ = nullptr;
    AVPacket* packet_ = nullptr;
    AVFrame* frame_ = nullptr;
    SwsContext* sws_ = nullptr;
    int stream_ = -1;
    int rotation_ = 0;  // clockwise degrees the picture is turned for display
    bool draining_ = false;
};

struct Frame {
    int index;
    cv::Mat bgr, gray;
    JpegPlanes planes;  // instead of bgr where the decoder gave them (Decoder::read)
};

// Frames decoded but not yet released: a pair (i, i+1) needs both, the writer needs frame i.
class Window {
  public:
    explicit Window(size_t capacity) : capacity_(capacity) {}

    // False once the run has failed: the decoder stops.
    bool push(Frame f) {
        std::unique_lock<std::mutex> lock(m_);
        room_.wait(lock, [&] { return frames_.size() < capacity_ || failed_; });
        if (failed_) return false;
        frames_[f.index] = std::move(f);
        ready_.notify_all();
        return true;
    }
    // Frame i, or nullptr once decoding has ended before reaching it.
    const Frame* get(int i) {
        std::unique_lock<std::mutex> lock(m_);
        ready_.wait(lock, [&] { return frames_.count(i) || i >= total_ || failed_; });
        auto it = frames_.find(i);
        return it == frames_.end() ? nullptr : &it->second;
    }
    void release_below(int i) {
        std::lock_guard<std::mutex> lock(m_);
        while (!frames_.empty() && frames_.begin()->first < i) frames_.erase(frames_.begin());
        room_.notify_all();
    }
    void finish(int total) {
        std::lock_guard<std::mutex> lock(m_);
        total_ = total;
        ready_.notify_all();
    }
    void fail() {
        std::lock_guard<std::mutex> lock(m_);
        failed_ = true;
        ready_.notify_all();
        room_.notify_all();
    }

  private:
    std::mutex m_;
    std::condition_variable ready_, room_;
    std::map<int, Frame> frames_;
    size_t capacity_;
    int total_ = 1 << 30;
    bool failed_ = false;
};

struct Result {
    int frames = 0;
    int flows = 0;
    cv::Size size;  // of the images written
};

// A decoded frame at the output size, with its gray image when flow is wanted.
Frame prepare_frame(int index, Picture& decoded, const Options& o) {
    Frame f{index, {}, {}, {}};
    if (!decoded.planes.empty()) {  // already as the image will be stored
        f.planes = std::move(decoded.planes);
        return f;
    }
    const cv::Size size = output_size(decoded.bgr.cols, decoded.bgr.rows, o);
    if (size != decoded.bgr.size()) cv::resize(decoded.bgr, f.bgr, size, 0, 0, cv::INTER_LINEAR);
    else f.bgr = decoded.bgr;
    if (o.step > 0) cv::cvtColor(f.bgr, f.gray, cv::COLOR_BGR2GRAY);
    return f;
}

cv::Size image_size(const Frame& f) {
    return f.planes.empty() ? f.bgr.size() : cv::Size(f.planes.width, f.planes.height);
}

void write_rgb(const std::string& out, const Frame& f, const Options& o) {
    const std::string path = out + "/" + frame_name("img", f.index + o.start_index);
    write_file(path, f.planes.empty() ? encode_jpeg(f.bgr, o.quality) : encode_jpeg(f.planes, o.quality));
}

// The flow of pair (index, index + 1) as flow_x/flow_y images named after its first frame.
void write_flow_pair(const std::string& out, int index, const cv::Mat& flow, const Options& o) {
    cv::Mat xy[2];
    cv::split(flow, xy);
    const int k = index + o.start_index;
    write_jpeg(out + "/" + frame_name("flow_x", k), quantize(xy[0], o.bound), o.quality);
    write_jpeg(out + "/" + frame_name("flow_y", k), quantize(xy[1], o.bound), o.quality);
}

// --threads 1 (what the native backend runs: one worker per core): decode, write and compute in
// turn on one thread, as the Python backend does. Handing each frame to another thread costs a
// wake-up and the frame's trip between two cores' caches, and with one extractor per core
// nothing is gained by it.
Result extract_video_sequential(const std::string& video, const std::string& out, const Options& o) {
    Decoder cap(video);
    make_dirs(out);
    Flow algo(o.algorithm, o.tvl1);
    Result r;
    cv::Mat prev_gray;
    for (;;) {
        Picture decoded;
        if (!cap.read(decoded, o)) break;
        const int i = r.frames++;
        const Frame f = prepare_frame(i, decoded, o);
        if (i == 0) r.size = image_size(f);
        if (!o.flow_only) write_rgb(out, f, o);
        if (o.step <= 0) continue;
        if (!prev_gray.empty()) {
            write_flow_pair(out, i - 1, algo.compute(prev_gray, f.gray), o);
            ++r.flows;
        }
        prev_gray = f.gray;
    }
    if (r.frames == 0) throw std::runtime_error("no frame could be decoded from " + video);
    return r;
}

Result extract_video(const std::string& video, const std::string& out, const Options& o) {
    if (o.threads == 1) return extract_video_sequential(video, out, o);
    Decoder cap(video);
    make_dirs(out);
    const bool rgb = !o.flow_only;
    const bool flow = o.step > 0;
    Window window(static_cast<size_t>(4 * o.threads + 8));
    std::atomic<int> decoded{0};
    std::string decode_error;
    cv::Size size;

    std::thread decoder([&] {
        int i = 0;
        try {
            for (;;) {
                Picture decoded;  // fresh buffers per frame: the window still holds earlier ones
                if (!cap.read(decoded, o)) break;
                Frame f = prepare_frame(i, decoded, o);
                if (i == 0) size = image_size(f);
                if (!window.push(std::move(f))) break;
                ++i;
            }
        } catch (const std::exception& e) {
            decode_error = e.what();
            window.fail();
        }
        decoded = i;
        window.finish(i);
    });

    // Workers take frame indices in order; worker for index i writes img_i and, if frame
    // i+1 exists, the flow pair (i, i+1).
    std::atomic<int> next{0};
    std::atomic<int> released{0};
    std::atomic<int> flows{0};
    std::mutex done_m;
    std::vector<char> done;
    std::string work_error;
    auto worker = [&] {
        Flow algo(o.algorithm, o.tvl1);
        try {
            for (;;) {
                int i = next++;
                const Frame* a = window.get(i);
                if (!a) return;
                if (rgb) write_rgb(out, *a, o);
                if (flow) {
                    const Frame* b = window.get(i + 1);
                    if (b) {
                        write_flow_pair(out, i, algo.compute(a->gray, b->gray), o);
                        ++flows;
                    }
                }
                // Frames below the lowest index still in use can go.
                std::lock_guard<std::mutex> lock(done_m);
                if (static_cast<int>(done.size()) <= i) done.resize(i + 1, 0);
                done[i] = 1;
                int low = released;
                while (low < static_cast<int>(done.size()) && done[low]) ++low;
                released = low;
                window.release_below(low);
            }
        } catch (const std::exception& e) {
            std::lock_guard<std::mutex> lock(done_m);
            work_error = e.what();
            window.fail();
        }
    };
    std::vector<std::thread> pool;
    for (int t = 0; t < o.threads; ++t) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
    decoder.join();
    if (!decode_error.empty()) throw std::runtime_error(video + ": " + decode_error);
    if (!work_error.empty()) throw std::runtime_error(video + ": " + work_error);
    if (decoded == 0) throw std::runtime_error("no frame could be decoded from " + video);
    return {decoded, flows, size};
}

std::string json_string(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
            continue;
        }
        out += c;
    }
    return out + "\"";
}

// What the caller reads back: one JSON line a video.
std::string report_line(const std::string& video, const Result& r) {
    return "{\"video\": " + json_string(video) + ", \"frames\": " + std::to_string(r.frames) +
           ", \"flows\": " + std::to_string(r.flows) + ", \"width\": " + std::to_string(r.size.width) +
           ", \"height\": " + std::to_string(r.size.height) + "}";
}

// Serve mode: a long-lived process per worker, so that loading OpenCV and its ~250 shared
// libraries (0.12 s here) is paid once, not per video. Writes straight into OUT_DIR.
int serve(const Options& o) {
    for (std::string line; std::getline(std::cin, line);) {
        auto tab = line.find('\t');
        if (tab == std::string::npos) {
            std::cout << "{\"error\": \"expected VIDEO<TAB>OUT_DIR\"}" << std::endl;
            continue;
        }
        std::string video = line.substr(0, tab), out = line.substr(tab + 1);
        try {
            Result r = extract_video(video, out, o);
            std::cout << report_line(video, r) << std::endl;
        } catch (const std::exception& e) {
            std::cout << "{\"video\": " << json_string(video) << ", \"error\": "
                      << json_string(e.what()) << "}" << std::endl;
        }
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::fesetround(FE_TONEAREST);  // std::nearbyint: round half to even
    Options o = parse(argc, argv);
    cv::setNumThreads(1);  // parallelism is ours: one OpenCV thread per worker thread
    if (o.serve) return serve(o);
    int failures = 0;
    for (const std::string& video : o.inputs) {
        std::string out = o.out_dir + "/" + stem_of(video);
        std::string marker = out + "/.done";
        if (o.list_input && !o.force && access(marker.c_str(), F_OK) == 0) {
            if (o.verbose) std::cerr << video << ": done before, skipped\n";
            continue;
        }
        try {
            Result r = extract_video(video, out, o);
            if (o.list_input) write_file(marker, {});
            // One machine-readable line per video: what was decoded and written.
            std::cout << report_line(video, r) << std::endl;
            if (o.verbose) std::cerr << video << ": " << r.frames << " frames, " << r.flows << " flow pairs\n";
        } catch (const std::exception& e) {
            std::cerr << "datatools-flow: " << e.what() << "\n";
            ++failures;
        }
    }
    return failures ? 1 : 0;
}

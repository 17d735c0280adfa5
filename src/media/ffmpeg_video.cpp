// Video files and cameras through FFmpeg: decoding (libavformat + libavcodec, libavdevice for V4L2)
// and encoding, with libswscale converting to and from packed RGB24.
#include "media/ffmpeg_video.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavdevice/avdevice.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
}

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cmath>
#include <mutex>
#include <thread>

#include "streamgen/error.h"

namespace streamgen {
namespace {

std::string av_error(int code) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(code, buf, sizeof buf);
  return buf;
}

void quiet_ffmpeg_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    av_log_set_level(AV_LOG_ERROR);  // our own errors name the source; FFmpeg's chatter is noise
    avdevice_register_all();
  });
}

// Packed RGB24 [H, W, 3] <-> [3, H, W].
torch::Tensor frame_to_rgb(SwsContext*& sws, const AVFrame* f) {
  sws = sws_getCachedContext(sws, f->width, f->height, static_cast<AVPixelFormat>(f->format), f->width, f->height, AV_PIX_FMT_RGB24,
                             SWS_BILINEAR, nullptr, nullptr, nullptr);
  if (!sws) {
    const char* name = av_get_pix_fmt_name(static_cast<AVPixelFormat>(f->format));
    throw Error("cannot convert pixel format " + std::string(name ? name : "?") + " to RGB");
  }
  auto hwc = torch::empty({f->height, f->width, 3}, torch::kUInt8);
  std::uint8_t* dst[1] = {hwc.data_ptr<std::uint8_t>()};
  const int dst_stride[1] = {3 * f->width};
  sws_scale(sws, f->data, f->linesize, 0, f->height, dst, dst_stride);
  return hwc.permute({2, 0, 1}).contiguous();
}

class FfmpegSource final : public FrameSource {
 public:
  FfmpegSource(const std::string& spec, const std::string& url, const std::string& kind) {
    quiet_ffmpeg_once();
    info_.spec = spec;
    info_.kind = kind;
    info_.live = kind == "camera";
    const AVInputFormat* input_format = nullptr;
    if (kind == "camera") {
      input_format = av_find_input_format("video4linux2");
      if (!input_format) throw Error("'" + spec + "': this FFmpeg has no video4linux2 input (libavdevice without V4L2)");
    }
    int rc = avformat_open_input(&fmt_, url.c_str(), input_format, nullptr);
    if (rc < 0) {
      if (kind == "camera") {
        const std::string why = rc == AVERROR(EBUSY) ? "the camera is busy (another program is using it)" : av_error(rc);
        throw Error("cannot open camera '" + url + "': " + why);
      }
      throw Error("cannot open video '" + url + "': " + av_error(rc));
    }
    if ((rc = avformat_find_stream_info(fmt_, nullptr)) < 0) throw Error("'" + url + "': cannot read stream information: " + av_error(rc));
    const AVCodec* codec = nullptr;
    stream_ = av_find_best_stream(fmt_, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (stream_ == AVERROR_STREAM_NOT_FOUND) throw Error("'" + url + "' holds no video stream");
    if (stream_ == AVERROR_DECODER_NOT_FOUND || !codec) {
      const auto id = fmt_->streams[std::max(stream_, 0)]->codecpar->codec_id;
      throw Error("'" + url + "': no decoder for its video codec (" + std::string(avcodec_get_name(id)) + ") in this FFmpeg");
    }
    if (stream_ < 0) throw Error("'" + url + "': " + av_error(stream_));
    AVStream* st = fmt_->streams[stream_];
    dec_ = avcodec_alloc_context3(codec);
    if (!dec_ || avcodec_parameters_to_context(dec_, st->codecpar) < 0) throw Error("'" + url + "': cannot set up the decoder");
    dec_->thread_count = 0;  // FFmpeg picks
    if ((rc = avcodec_open2(dec_, codec, nullptr)) < 0) throw Error("'" + url + "': cannot open the " + codec->name + " decoder: " + av_error(rc));
    time_base_ = st->time_base;
    start_ = st->start_time == AV_NOPTS_VALUE ? 0 : st->start_time;
    info_.width = dec_->width;
    info_.height = dec_->height;
    const AVRational rate = av_guess_frame_rate(fmt_, st, nullptr);
    info_.fps = rate.num > 0 && rate.den > 0 ? av_q2d(rate) : 0;
    info_.frame_count = st->nb_frames > 0 ? st->nb_frames : -1;
    if (info_.width <= 0 || info_.height <= 0) throw Error("'" + url + "': the video stream reports no frame size");
    frame_ = av_frame_alloc();
    packet_ = av_packet_alloc();
  }

  ~FfmpegSource() override {
    sws_freeContext(sws_);
    av_frame_free(&frame_);
    av_packet_free(&packet_);
    avcodec_free_context(&dec_);
    avformat_close_input(&fmt_);
  }

  std::optional<VideoFrame> next() override {
    while (true) {
      int rc = avcodec_receive_frame(dec_, frame_);
      if (rc == 0) {
        VideoFrame out;
        out.rgb = frame_to_rgb(sws_, frame_);
        out.index = index_++;
        const auto pts = frame_->best_effort_timestamp;
        out.time_s = pts == AV_NOPTS_VALUE ? (info_.fps > 0 ? static_cast<double>(out.index) / info_.fps : 0)
                                           : static_cast<double>(pts - start_) * av_q2d(time_base_);
        av_frame_unref(frame_);
        return out;
      }
      if (rc == AVERROR_EOF) return std::nullopt;
      if (rc != AVERROR(EAGAIN)) throw Error("'" + info_.spec + "': decoding failed at frame " + std::to_string(index_) + ": " + av_error(rc));
      if (flushed_) return std::nullopt;
      rc = av_read_frame(fmt_, packet_);
      if (rc == AVERROR(EAGAIN)) {  // a camera with no frame ready yet
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        continue;
      }
      if (rc < 0) {
        if (rc != AVERROR_EOF) spdlog::warn("'{}': read error after frame {} ({}); ending the source", info_.spec, index_, av_error(rc));
        avcodec_send_packet(dec_, nullptr);  // drain the decoder's delayed frames
        flushed_ = true;
        continue;
      }
      if (packet_->stream_index == stream_) {
        rc = avcodec_send_packet(dec_, packet_);
        if (rc < 0 && rc != AVERROR(EAGAIN)) spdlog::warn("'{}': skipping a damaged packet ({})", info_.spec, av_error(rc));
      }
      av_packet_unref(packet_);
    }
  }

 private:
  AVFormatContext* fmt_ = nullptr;
  AVCodecContext* dec_ = nullptr;
  SwsContext* sws_ = nullptr;
  AVFrame* frame_ = nullptr;
  AVPacket* packet_ = nullptr;
  int stream_ = -1;
  AVRational time_base_{1, 1};
  std::int64_t start_ = 0, index_ = 0;
  bool flushed_ = false;
};

const AVCodec* choose_encoder(const AVOutputFormat* format, const std::string& forced, const std::string& path) {
  if (!forced.empty()) {
    const AVCodec* c = avcodec_find_encoder_by_name(forced.c_str());
    if (!c || c->type != AVMEDIA_TYPE_VIDEO) throw Error("'" + path + "': no video encoder named '" + forced + "' in this FFmpeg");
    return c;
  }
  // H.264 wherever the container takes it and libx264 is there; else the container's own default
  // (VP9/VP8 for WebM); MPEG-4 part 2 as the encoder every FFmpeg build has.
  if (avformat_query_codec(format, AV_CODEC_ID_H264, FF_COMPLIANCE_NORMAL) == 1)
    if (const AVCodec* c = avcodec_find_encoder_by_name("libx264")) return c;
  if (format->video_codec != AV_CODEC_ID_NONE && format->video_codec != AV_CODEC_ID_H264)
    if (const AVCodec* c = avcodec_find_encoder(format->video_codec)) return c;
  if (avformat_query_codec(format, AV_CODEC_ID_MPEG4, FF_COMPLIANCE_NORMAL) == 1)
    if (const AVCodec* c = avcodec_find_encoder(AV_CODEC_ID_MPEG4)) return c;
  throw Error("'" + path + "': no video encoder available for the " + format->name + " container");
}

class FfmpegSink final : public FrameSink {
 public:
  FfmpegSink(std::string path, SinkOptions options) : path_(std::move(path)), options_(std::move(options)) {
    quiet_ffmpeg_once();
    if (!(options_.fps > 0) || options_.fps > 1000) throw Error("'" + path_ + "': frame rate must be in (0, 1000], got " + std::to_string(options_.fps));
    const int rc = avformat_alloc_output_context2(&oc_, nullptr, nullptr, path_.c_str());
    if (rc < 0 || !oc_) throw Error("'" + path_ + "': FFmpeg knows no container for this file name (use .mp4, .mkv, .mov, .avi or .webm)");
    codec_ = choose_encoder(oc_->oformat, options_.codec, path_);
  }
  ~FfmpegSink() override {
    try {
      close();
    } catch (const std::exception& e) {
      spdlog::error("{}", e.what());
    }
    release();
  }

  std::string description() const override { return path_ + " (" + (codec_ ? codec_->name : "?") + ")"; }

  void write(const torch::Tensor& rgb_u8) override {
    if (closed_) throw Error("'" + path_ + "': write after close");
    if (rgb_u8.scalar_type() != torch::kUInt8 || rgb_u8.dim() != 3 || rgb_u8.size(0) != 3)
      throw Error("'" + path_ + "': frames must be uint8 [3, H, W]");
    const int h = static_cast<int>(rgb_u8.size(1)), w = static_cast<int>(rgb_u8.size(2));
    if (!enc_) open(w, h);
    if (w != enc_->width || h != enc_->height)
      throw Error("'" + path_ + "': frame " + std::to_string(next_pts_) + " is " + std::to_string(w) + "x" + std::to_string(h) + ", the video is " +
                  std::to_string(enc_->width) + "x" + std::to_string(enc_->height));
    const auto hwc = rgb_u8.permute({1, 2, 0}).contiguous();
    int rc = av_frame_make_writable(frame_);
    if (rc < 0) throw Error("'" + path_ + "': " + av_error(rc));
    const std::uint8_t* src[1] = {hwc.data_ptr<std::uint8_t>()};
    const int src_stride[1] = {3 * w};
    sws_scale(sws_, src, src_stride, 0, h, frame_->data, frame_->linesize);
    frame_->pts = next_pts_++;
    send(frame_);
  }

  void close() override {
    if (closed_) return;
    closed_ = true;
    if (!enc_) {  // nothing was written: no file
      release();
      return;
    }
    send(nullptr);
    const int rc = av_write_trailer(oc_);
    release();
    if (rc < 0) throw Error("'" + path_ + "': cannot finish the file: " + av_error(rc));
  }

 private:
  void open(int w, int h) {
    // 4:2:0 needs even sizes; refusing is clearer than a silently cropped video.
    if (w % 2 || h % 2) throw Error("'" + path_ + "': video frames need an even width and height, got " + std::to_string(w) + "x" + std::to_string(h));
    enc_ = avcodec_alloc_context3(codec_);
    enc_->width = w;
    enc_->height = h;
    const AVRational rate = av_d2q(options_.fps, 100000);
    enc_->time_base = av_inv_q(rate);
    enc_->framerate = rate;
    enc_->gop_size = 12;
    enc_->pix_fmt = AV_PIX_FMT_YUV420P;
    enc_->thread_count = 0;
    if (std::string(codec_->name) == "libx264") {
      av_opt_set(enc_->priv_data, "preset", "veryfast", 0);
      av_opt_set_int(enc_->priv_data, "crf", options_.crf, 0);
    } else if (std::string(codec_->name) == "libvpx-vp9" || std::string(codec_->name) == "libvpx") {
      av_opt_set_int(enc_->priv_data, "crf", std::max(options_.crf, 4), 0);
      av_opt_set(enc_->priv_data, "deadline", "realtime", 0);
      enc_->bit_rate = 0;
    } else {
      enc_->flags |= AV_CODEC_FLAG_QSCALE;
      enc_->global_quality = FF_QP2LAMBDA * 3;
    }
    if (oc_->oformat->flags & AVFMT_GLOBALHEADER) enc_->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    int rc = avcodec_open2(enc_, codec_, nullptr);
    if (rc < 0) throw Error("'" + path_ + "': cannot open the " + codec_->name + " encoder: " + av_error(rc));
    stream_ = avformat_new_stream(oc_, nullptr);
    if (!stream_ || avcodec_parameters_from_context(stream_->codecpar, enc_) < 0) throw Error("'" + path_ + "': cannot add the video stream");
    stream_->time_base = enc_->time_base;
    stream_->avg_frame_rate = rate;
    if (!(oc_->oformat->flags & AVFMT_NOFILE) && (rc = avio_open(&oc_->pb, path_.c_str(), AVIO_FLAG_WRITE)) < 0)
      throw Error("cannot create '" + path_ + "': " + av_error(rc));
    if ((rc = avformat_write_header(oc_, nullptr)) < 0) throw Error("'" + path_ + "': cannot write the header: " + av_error(rc));
    frame_ = av_frame_alloc();
    frame_->format = enc_->pix_fmt;
    frame_->width = w;
    frame_->height = h;
    if (av_frame_get_buffer(frame_, 0) < 0) throw Error("'" + path_ + "': out of memory for a frame");
    packet_ = av_packet_alloc();
    sws_ = sws_getContext(w, h, AV_PIX_FMT_RGB24, w, h, enc_->pix_fmt, SWS_BILINEAR, nullptr, nullptr, nullptr);
    if (!sws_) throw Error("'" + path_ + "': cannot set up the colour conversion");
  }

  void send(AVFrame* f) {
    int rc = avcodec_send_frame(enc_, f);
    if (rc < 0) throw Error("'" + path_ + "': encoding failed: " + av_error(rc));
    while ((rc = avcodec_receive_packet(enc_, packet_)) == 0) {
      av_packet_rescale_ts(packet_, enc_->time_base, stream_->time_base);
      packet_->stream_index = stream_->index;
      rc = av_interleaved_write_frame(oc_, packet_);
      if (rc < 0) throw Error("'" + path_ + "': write failed: " + av_error(rc));
    }
    if (rc != AVERROR(EAGAIN) && rc != AVERROR_EOF) throw Error("'" + path_ + "': encoding failed: " + av_error(rc));
  }

  void release() {
    sws_freeContext(sws_);
    sws_ = nullptr;
    av_frame_free(&frame_);
    av_packet_free(&packet_);
    avcodec_free_context(&enc_);
    if (oc_) {
      if (oc_->pb && !(oc_->oformat->flags & AVFMT_NOFILE)) avio_closep(&oc_->pb);
      avformat_free_context(oc_);
      oc_ = nullptr;
    }
  }

  std::string path_;
  SinkOptions options_;
  AVFormatContext* oc_ = nullptr;
  const AVCodec* codec_ = nullptr;
  AVCodecContext* enc_ = nullptr;
  AVStream* stream_ = nullptr;
  AVFrame* frame_ = nullptr;
  AVPacket* packet_ = nullptr;
  SwsContext* sws_ = nullptr;
  std::int64_t next_pts_ = 0;
  bool closed_ = false;
};

}  // namespace

std::unique_ptr<FrameSource> open_ffmpeg_source(const std::string& spec, const std::string& url, bool camera) {
  return std::make_unique<FfmpegSource>(spec, url, camera ? "camera" : "video");
}

std::unique_ptr<FrameSink> open_ffmpeg_sink(const std::string& path, const SinkOptions& options) {
  return std::make_unique<FfmpegSink>(path, options);
}

}  // namespace streamgen

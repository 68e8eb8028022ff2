// Dual TV-L1 optical flow on the CPU, as the Python `opencv` backend computes it.
//
// The Python backend runs the OpenCV of its wheel (5.0); Debian ships OpenCV 4.6, whose
// optflow::DualTVL1OpticalFlow differs from 5.0's on 0.6-0.8 % of pixels by more than one
// quantization level at 340x256 — enough for the two backends to disagree. This is the same
// model, parameters and discretisation, written after datatools/extract/torch_flow.py (which
// agrees with OpenCV 5.0 to 0.001 px): image pyramid by 0.8, centred image gradients, bicubic
// warping of I1 and its gradient evaluated exactly (a = -0.75, zero outside the image), the
// thresholding step, dual updates with OpenCV's border rules, a 5x5 median of the flow before
// each outer iteration, and the epsilon stop. Single-threaded: one worker per core already
// fills the machine.
#pragma once

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <cfloat>
#include <cmath>
#include <vector>

namespace tvl1 {

// The model's parameters. They are given on the command line (--tvl1), from the one source
// every backend uses (datatools/extract/tvl1.py); these defaults are OpenCV's.
struct Params {
    double tau = 0.25, lambda = 0.15, theta = 0.3, epsilon = 0.01, scale_step = 0.8;
    int scales = 5, warps = 5, inner = 30, outer = 10, median = 5;
};

// 0.5 * central differences inside, 0.5 * one-sided differences on the border.
inline void centred_gradient(const cv::Mat& img, cv::Mat& dx, cv::Mat& dy) {
    const int h = img.rows, w = img.cols;
    dx.create(h, w, CV_32F);
    dy.create(h, w, CV_32F);
    for (int y = 0; y < h; ++y) {
        const float* r = img.ptr<float>(y);
        const float* up = img.ptr<float>(y > 0 ? y - 1 : 0);
        const float* down = img.ptr<float>(y < h - 1 ? y + 1 : h - 1);
        float* ox = dx.ptr<float>(y);
        float* oy = dy.ptr<float>(y);
        for (int x = 1; x < w - 1; ++x) ox[x] = 0.5f * (r[x + 1] - r[x - 1]);
        ox[0] = 0.5f * (r[1] - r[0]);
        ox[w - 1] = 0.5f * (r[w - 1] - r[w - 2]);
        for (int x = 0; x < w; ++x) oy[x] = 0.5f * (down[x] - up[x]);
    }
}

// Keys' cubic convolution weights (a = -0.75) for the four taps around a sample at offset t.
// The fourth is one minus the other three, as OpenCV computes it: with the polynomial
// instead, the flow moved 0.008 px (mean) away from OpenCV 5.0's; with it, 0.001-0.004 px.
inline void cubic_weights(float t, float c[4]) {
    const float a = -0.75f;
    auto near = [a](float x) { return ((a + 2) * x - (a + 3)) * x * x + 1; };
    auto far = [a](float x) { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a; };
    c[0] = far(t + 1);
    c[1] = near(t);
    c[2] = near(1 - t);
    c[3] = 1.f - c[0] - c[1] - c[2];
}

// I1, I1x, I1y sampled at (x + u1, y + u2), bicubic, zero outside the image.
inline void warp(const cv::Mat& i1, const cv::Mat& i1x, const cv::Mat& i1y, const cv::Mat& u1,
                 const cv::Mat& u2, cv::Mat& w, cv::Mat& wx, cv::Mat& wy) {
    const int h = i1.rows, wd = i1.cols;
    w.create(h, wd, CV_32F);
    wx.create(h, wd, CV_32F);
    wy.create(h, wd, CV_32F);
    const cv::Mat* src[3] = {&i1, &i1x, &i1y};
    cv::Mat* dst[3] = {&w, &wx, &wy};
    for (int y = 0; y < h; ++y) {
        const float* a = u1.ptr<float>(y);
        const float* b = u2.ptr<float>(y);
        for (int x = 0; x < wd; ++x) {
            const float sx = static_cast<float>(x) + a[x], sy = static_cast<float>(y) + b[x];
            const float fx = std::floor(sx), fy = std::floor(sy);
            const int x0 = static_cast<int>(fx) - 1, y0 = static_cast<int>(fy) - 1;
            float cx[4], cy[4];
            cubic_weights(sx - fx, cx);
            cubic_weights(sy - fy, cy);
            const bool inside = x0 >= 0 && y0 >= 0 && x0 + 3 < wd && y0 + 3 < h;
            for (int k = 0; k < 3; ++k) {
                const cv::Mat& s = *src[k];
                float acc = 0;
                for (int j = 0; j < 4; ++j) {
                    const int yy = y0 + j;
                    float row = 0;
                    if (inside) {
                        const float* p = s.ptr<float>(yy) + x0;
                        row = p[0] * cx[0] + p[1] * cx[1] + p[2] * cx[2] + p[3] * cx[3];
                    } else if (yy >= 0 && yy < h) {
                        const float* p = s.ptr<float>(yy);
                        for (int i = 0; i < 4; ++i) {
                            const int xx = x0 + i;
                            row += (xx >= 0 && xx < wd ? p[xx] : 0.0f) * cx[i];
                        }
                    }
                    acc += row * cy[j];
                }
                dst[k]->at<float>(y, x) = acc;
            }
        }
    }
}

// Backward differences of the duals; the first row and column see zero outside.
inline void divergence(const cv::Mat& v1, const cv::Mat& v2, cv::Mat& div) {
    const int h = v1.rows, w = v1.cols;
    div.create(h, w, CV_32F);
    for (int y = 0; y < h; ++y) {
        const float* a = v1.ptr<float>(y);
        const float* b = v2.ptr<float>(y);
        const float* bu = y > 0 ? v2.ptr<float>(y - 1) : nullptr;
        float* d = div.ptr<float>(y);
        d[0] = a[0] + b[0];
        for (int x = 1; x < w; ++x) d[x] = (a[x] - a[x - 1]) + b[x];
        if (bu)
            for (int x = 0; x < w; ++x) d[x] -= bu[x];
    }
}

// One pyramid level: warps, outer and inner iterations; u1, u2 in and out.
inline void one_scale(const cv::Mat& i0, const cv::Mat& i1, cv::Mat& u1, cv::Mat& u2, const Params& p) {
    const int h = i0.rows, w = i0.cols;
    const double scaled_eps = p.epsilon * p.epsilon * h * w;
    // Products of the parameters in double, then float, as OpenCV does.
    const float lt = static_cast<float>(p.lambda * p.theta);
    const float taut = static_cast<float>(p.tau / p.theta);
    const float theta = static_cast<float>(p.theta);
    cv::Mat i1x, i1y;
    centred_gradient(i1, i1x, i1y);
    cv::Mat p11 = cv::Mat::zeros(h, w, CV_32F), p12 = p11.clone(), p21 = p11.clone(), p22 = p11.clone();
    cv::Mat i1w, i1wx, i1wy, grad(h, w, CV_32F), rho_c(h, w, CV_32F), div1, div2;
    for (int warping = 0; warping < p.warps; ++warping) {
        warp(i1, i1x, i1y, u1, u2, i1w, i1wx, i1wy);
        for (int y = 0; y < h; ++y) {
            const float *gx = i1wx.ptr<float>(y), *gy = i1wy.ptr<float>(y), *iw = i1w.ptr<float>(y);
            const float *a = u1.ptr<float>(y), *b = u2.ptr<float>(y), *z = i0.ptr<float>(y);
            float *g = grad.ptr<float>(y), *r = rho_c.ptr<float>(y);
            for (int x = 0; x < w; ++x) {
                g[x] = gx[x] * gx[x] + gy[x] * gy[x];
                r[x] = iw[x] - gx[x] * a[x] - gy[x] * b[x] - z[x];
            }
        }
        double error = INFINITY;
        for (int outer = 0; outer < p.outer && error > scaled_eps; ++outer) {
            if (p.median > 1) {
                cv::medianBlur(u1, u1, p.median);
                cv::medianBlur(u2, u2, p.median);
            }
            error = INFINITY;
            for (int inner = 0; inner < p.inner && error > scaled_eps; ++inner) {
                divergence(p11, p12, div1);
                divergence(p21, p22, div2);
                error = 0;
                for (int y = 0; y < h; ++y) {
                    const float *gx = i1wx.ptr<float>(y), *gy = i1wy.ptr<float>(y);
                    const float *g = grad.ptr<float>(y), *rc = rho_c.ptr<float>(y);
                    const float *d1 = div1.ptr<float>(y), *d2 = div2.ptr<float>(y);
                    float *a = u1.ptr<float>(y), *b = u2.ptr<float>(y);
                    double row_error = 0;
                    for (int x = 0; x < w; ++x) {
                        const float rho = rc[x] + gx[x] * a[x] + gy[x] * b[x];
                        const float thr = lt * g[x];
                        float s1, s2;
                        if (rho < -thr) {
                            s1 = lt * gx[x];
                            s2 = lt * gy[x];
                        } else if (rho > thr) {
                            s1 = -lt * gx[x];
                            s2 = -lt * gy[x];
                        } else {
                            const float fi = g[x] > FLT_EPSILON ? -rho / g[x] : 0.0f;
                            s1 = fi * gx[x];
                            s2 = fi * gy[x];
                        }
                        const float n1 = (a[x] + s1) + theta * d1[x];
                        const float n2 = (b[x] + s2) + theta * d2[x];
                        const float e1 = n1 - a[x], e2 = n2 - b[x];
                        row_error += static_cast<double>(e1 * e1 + e2 * e2);
                        a[x] = n1;
                        b[x] = n2;
                    }
                    error += row_error;
                }
                // Dual step on the forward differences of the new flow (zero past the last
                // column and row).
                for (int y = 0; y < h; ++y) {
                    const float *a = u1.ptr<float>(y), *b = u2.ptr<float>(y);
                    const float *an = y < h - 1 ? u1.ptr<float>(y + 1) : nullptr;
                    const float *bn = y < h - 1 ? u2.ptr<float>(y + 1) : nullptr;
                    float *q11 = p11.ptr<float>(y), *q12 = p12.ptr<float>(y);
                    float *q21 = p21.ptr<float>(y), *q22 = p22.ptr<float>(y);
                    for (int x = 0; x < w; ++x) {
                        const float u1x = x < w - 1 ? a[x + 1] - a[x] : 0.0f;
                        const float u1y = an ? an[x] - a[x] : 0.0f;
                        const float u2x = x < w - 1 ? b[x + 1] - b[x] : 0.0f;
                        const float u2y = bn ? bn[x] - b[x] : 0.0f;
                        const float ng1 = 1.0f + taut * std::sqrt(u1x * u1x + u1y * u1y);
                        const float ng2 = 1.0f + taut * std::sqrt(u2x * u2x + u2y * u2y);
                        q11[x] = (q11[x] + taut * u1x) / ng1;
                        q12[x] = (q12[x] + taut * u1y) / ng1;
                        q21[x] = (q21[x] + taut * u2x) / ng2;
                        q22[x] = (q22[x] + taut * u2y) / ng2;
                    }
                }
            }
        }
    }
}

// Flow from i0 to i1 (8-bit gray, same size) as CV_32FC2, in pixels.
inline cv::Mat flow(const cv::Mat& gray0, const cv::Mat& gray1, const Params& p) {
    std::vector<cv::Mat> l0(1), l1(1);
    gray0.convertTo(l0[0], CV_32F);
    gray1.convertTo(l1[0], CV_32F);
    for (int s = 1; s < p.scales; ++s) {
        cv::Mat a, b;
        cv::resize(l0[s - 1], a, cv::Size(), p.scale_step, p.scale_step, cv::INTER_LINEAR);
        if (a.cols < 16 || a.rows < 16) break;
        cv::resize(l1[s - 1], b, cv::Size(), p.scale_step, p.scale_step, cv::INTER_LINEAR);
        l0.push_back(a);
        l1.push_back(b);
    }
    const int top = static_cast<int>(l0.size()) - 1;
    cv::Mat u1 = cv::Mat::zeros(l0[top].size(), CV_32F), u2 = u1.clone();
    for (int s = top;; --s) {
        one_scale(l0[s], l1[s], u1, u2, p);
        if (s == 0) break;
        cv::Mat a, b;
        cv::resize(u1, a, l0[s - 1].size(), 0, 0, cv::INTER_LINEAR);
        cv::resize(u2, b, l0[s - 1].size(), 0, 0, cv::INTER_LINEAR);
        u1 = a * static_cast<float>(1.0 / p.scale_step);
        u2 = b * static_cast<float>(1.0 / p.scale_step);
    }
    cv::Mat out;
    cv::merge(std::vector<cv::Mat>{u1, u2}, out);
    return out;
}

}  // namespace tvl1

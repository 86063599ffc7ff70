// The three-handler site of tests/frameworks/apps.py on Express 5 with its default
// settings (case-insensitive routes, non-strict trailing slash). Serves on the listening
// socket whose file descriptor is the first argument.
import express from "express";

const report = (name) => (req, res) => {
  res.set("X-Handler", name);
  res.set("X-Seen-Route", req.get("X-Router-Route") || "-");
  res.send(name);
};

const app = express();
app.all("/admin", report("admin"));
app.all("/admin/*rest", report("admin"));
app.all("/internal/secret", report("secret"));
app.use(report("public"));
app.listen({ fd: Number(process.argv[2]) });

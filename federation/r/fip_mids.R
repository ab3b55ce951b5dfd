# fip_mids(): R mice's `mids` object from the results of the federated imputation portal (fip).
#
#   library(mice)
#   source("fip_mids.R")                      # from the zip: source(unz(zip, "fip_mids.R"))
#   imp <- fip_mids("job-7-imputations.zip")  # the portal's zip, or the folder fip simulate wrote
#   plot(imp)                                 # trace plot: each chain's mean and SD at central
#   densityplot(imp)                          # observed against imputed
#   imp$method                                # fip's methods, by mice's names
#   fit <- with(imp, lm(`age (y)` ~ x + smoker))  # backquote a name that is not syntactic
#   summary(pool(fit), conf.int = TRUE)
#
# `path` is the zip (original.csv, imputation_<m>.csv, methods.csv, chains.csv), a folder
# holding imputations_long.csv (or those files unzipped), or the long CSV itself; `chains` and
# `methods` name those two files when they are not beside the data (the portal's separate
# downloads: job-7-chains.csv, job-7-methods.csv). Nothing is unpacked to disk: the zip is read
# entry by entry. A text column that fip did not impute becomes a factor, as mice needs.
#
# What the mids holds:
# - data and imputations under their own column names, whatever they are ("age (y)" included);
# - method: each target's fip method by mice's name (gaussian "norm", pmm "pmm", logistic
#   "logreg", categorical "polyreg", ordinal "polr", poisson "poisson": mice has no count
#   method, countimp's is called so), "" for a column fip did not impute; fip_method: fip's
#   own names;
# - binary (logistic) and categorical targets as factors, ordinal ones as ordered factors, on
#   the job's levels (the data's codes, e.g. 0 and 1);
# - chainMean and chainVar (mice's layout: variable x iteration x chain) and iteration, from
#   chains.csv: the mean and variance of central's imputed cells after each cycle of each
#   chain, as fip recorded them (a binary target's mean is the share of 1s);
# - class c("fip_mids", "mids"): mice's plots build formulas from the column names, so for
#   plot(), densityplot(), stripplot(), bwplot() and xyplot() the fip_mids methods below hand
#   mice a copy whose names are syntactic (make.names: "age (y)" is shown as "age..y."), and
#   plot() draws a single chain (fip's default) as one line. Everything else is mice's own
#   (mice's complete(imp, "long") makes the names syntactic through data.frame();
#   complete(imp, m) and with(imp, ...) keep them).
# Without chains.csv (the one-shot families) there are no chains and plot() says so; without
# methods.csv the methods are as.mids's guesses and no column becomes a factor.
fip_mids <- function(path, chains = NULL, methods = NULL) {
  if (!requireNamespace("mice", quietly = TRUE)) {
    stop("fip_mids needs the R package mice: install.packages(\"mice\")", call. = FALSE)
  }
  files <- .fip_files(path)
  long <- .fip_long(files)
  table <- .fip_table(methods, files, "methods.csv")
  trace <- .fip_table(chains, files, "chains.csv")
  columns <- setdiff(names(long), c(".imp", ".id"))
  long <- long[, c(".imp", ".id", columns), drop = FALSE]
  fip_method <- setNames(rep("", length(columns)), columns)
  mice_method <- fip_method
  if (!is.null(table)) {
    .fip_need(table$data, table$label, c("column", "method", "mice", "class", "levels"))
    for (i in seq_len(nrow(table$data))) {
      row <- table$data[i, ]
      column <- as.character(row$column)
      if (!column %in% columns) {
        stop(sprintf("%s: column '%s' is not in the data", table$label, column), call. = FALSE)
      }
      fip_method[[column]] <- as.character(row$method)
      mice_method[[column]] <- as.character(row$mice)
      long[[column]] <- .fip_factor(long[[column]], row, table$label)
    }
  }
  for (column in columns) {
    if (is.character(long[[column]])) long[[column]] <- factor(long[[column]])
  }
  # mice builds formulas from the names: it works on plain placeholders, then gets the names back.
  plain <- paste0("V", seq_along(columns))
  names(long) <- c(".imp", ".id", plain)
  imp <- suppressWarnings(mice::as.mids(long))
  imp <- .fip_rename(imp, plain, columns)
  if (!is.null(table)) { # without methods.csv, the methods are mice's guesses (as.mids)
    imp$method[] <- mice_method[names(imp$method)]
    imp$fip_method <- fip_method
  }
  if (!is.null(trace)) imp <- .fip_chains(imp, trace)
  class(imp) <- c("fip_mids", class(imp))
  imp
}

plot.fip_mids <- function(x, y = NULL, ...) {
  if (is.null(x$chainMean) || x$iteration == 0) {
    stop(paste("plot: no chains: fip records them for the chained family (SIMICE, IMICE,",
               "AVGMMICE, CSLMICE) in chains.csv"), call. = FALSE)
  }
  x <- .fip_plottable(x)
  x$m <- dim(x$chainMean)[3] # mice's plot draws x$m chains
  .fip_again(match.call(), quote(graphics::plot), x, parent.frame())
}

densityplot.fip_mids <- function(x, data, ...) {
  .fip_again(match.call(), quote(lattice::densityplot), .fip_plottable(x), parent.frame())
}

stripplot.fip_mids <- function(x, data, ...) {
  .fip_again(match.call(), quote(lattice::stripplot), .fip_plottable(x), parent.frame())
}

bwplot.fip_mids <- function(x, data, ...) {
  .fip_again(match.call(), quote(lattice::bwplot), .fip_plottable(x), parent.frame())
}

xyplot.fip_mids <- function(x, data, ...) {
  .fip_again(match.call(), quote(lattice::xyplot), .fip_plottable(x), parent.frame())
}

# The user's call again, on mice's method with `x` in its place: mice's plots read their
# arguments as written (match.call, substitute), so they must arrive as the user wrote them.
.fip_again <- function(call, generic, x, frame) {
  call[[1]] <- generic
  call$x <- x
  eval(call, frame)
}

# A plain mids with syntactic names, for mice's plots.
.fip_plottable <- function(x) {
  class(x) <- setdiff(class(x), "fip_mids")
  columns <- names(x$data)
  .fip_rename(x, columns, make.names(columns, unique = TRUE))
}

# Where the files are: a function that reads one by name (NULL when absent), and a label.
.fip_files <- function(path) {
  if (!is.character(path) || length(path) != 1) {
    stop("fip_mids: path must be one file or folder name", call. = FALSE)
  }
  if (dir.exists(path)) {
    read <- function(name) {
      file <- file.path(path, name)
      if (file.exists(file)) .fip_csv(file, file) else NULL
    }
    listed <- list.files(path)
  } else if (!file.exists(path)) {
    stop(sprintf("fip_mids: %s: no such file or folder", path), call. = FALSE)
  } else if (identical(readBin(path, "raw", 4), as.raw(c(0x50, 0x4b, 0x03, 0x04)))) { # a zip
    listed <- utils::unzip(path, list = TRUE)$Name
    read <- function(name) {
      if (name %in% listed) .fip_csv(unz(path, name), paste0(path, ":", name)) else NULL
    }
  } else {
    return(list(long = .fip_csv(path, path), read = function(name) NULL, listed = character(),
                label = path))
  }
  list(long = NULL, read = read, listed = listed, label = path)
}

.fip_csv <- function(file, label) {
  frame <- tryCatch(
    utils::read.csv(file, check.names = FALSE, na.strings = "NA", stringsAsFactors = FALSE,
                    comment.char = "", encoding = "UTF-8"),
    error = function(e) stop(sprintf("%s: %s", label, conditionMessage(e)), call. = FALSE)
  )
  attr(frame, "label") <- label
  frame
}

# The long data (mice's complete(imp, "long", include = TRUE)): the long CSV, or original.csv
# and imputation_<m>.csv stacked.
.fip_long <- function(files) {
  long <- files$long
  if (is.null(long)) long <- files$read("imputations_long.csv")
  if (is.null(long)) {
    original <- files$read("original.csv")
    datasets <- grep("^imputation_[0-9]+\\.csv$", files$listed, value = TRUE)
    if (is.null(original) || length(datasets) == 0) {
      stop(sprintf(paste("fip_mids: %s holds neither imputations_long.csv nor original.csv",
                         "with imputation_<m>.csv: not fip's results"), files$label),
           call. = FALSE)
    }
    datasets <- datasets[order(as.integer(gsub("[^0-9]", "", datasets)))]
    parts <- lapply(c("original.csv", datasets), files$read)
    for (part in parts[-1]) {
      if (!identical(names(part), names(original)) || nrow(part) != nrow(original)) {
        stop(sprintf("%s: its columns or rows differ from original.csv", attr(part, "label")),
             call. = FALSE)
      }
    }
    stacked <- lapply(seq_along(parts), function(i) {
      data.frame(.imp = i - 1L, .id = seq_len(nrow(parts[[i]])), parts[[i]], check.names = FALSE)
    })
    return(do.call(rbind, stacked))
  }
  .fip_need(long, attr(long, "label"), c(".imp", ".id"))
  long
}

.fip_table <- function(file, files, name) {
  data <- if (is.null(file)) files$read(name) else .fip_csv(file, file)
  if (is.null(data)) NULL else list(data = data, label = attr(data, "label"))
}

.fip_need <- function(frame, label, columns) {
  absent <- setdiff(columns, names(frame))
  if (length(absent) > 0) {
    stop(sprintf("%s: no column %s", label, paste0("'", absent, "'", collapse = ", ")),
         call. = FALSE)
  }
}

# A target as R holds it: numbers, or a factor (ordered for an ordinal target) on its levels.
.fip_factor <- function(values, row, label) {
  class <- as.character(row$class)
  if (class == "numeric") return(values)
  if (!class %in% c("factor", "ordered")) {
    stop(sprintf("%s: column '%s': class '%s' is not numeric, factor or ordered", label,
                 row$column, class), call. = FALSE)
  }
  levels <- strsplit(as.character(row$levels), ";", fixed = TRUE)[[1]]
  if (is.numeric(values)) levels <- as.numeric(levels)
  outside <- !is.na(values) & !values %in% levels
  if (any(outside)) {
    stop(sprintf("%s: column '%s' holds %d value(s) outside its levels %s", label, row$column,
                 sum(outside), row$levels), call. = FALSE)
  }
  factor(values, levels = levels, ordered = class == "ordered")
}

# chainMean and chainVar from chains.csv: variable x iteration x chain, NaN where none.
.fip_chains <- function(imp, trace) {
  frame <- trace$data
  .fip_need(frame, trace$label, c("target", "chain", "cycle", "mean", "variance"))
  columns <- names(imp$data)
  where <- match(as.character(frame$target), columns)
  if (anyNA(where)) {
    stop(sprintf("%s: target '%s' is not in the data", trace$label,
                 as.character(frame$target)[is.na(where)][1]), call. = FALSE)
  }
  chains <- sort(unique(frame$chain))
  cycles <- max(frame$cycle)
  names <- list(columns, as.character(seq_len(cycles)), paste("Chain", chains))
  means <- array(NaN, dim = lengths(names), dimnames = names)
  variances <- means
  at <- cbind(where, frame$cycle, match(frame$chain, chains))
  means[at] <- as.numeric(frame$mean)
  variances[at] <- as.numeric(frame$variance)
  imp$chainMean <- means
  imp$chainVar <- variances
  imp$iteration <- as.integer(cycles)
  imp
}

# The mids with its column names `from` renamed `to`, wherever mice keeps them.
.fip_rename <- function(imp, from, to) {
  map <- setNames(to, from)
  swap <- function(x) {
    hit <- !is.na(x) & x %in% from
    x[hit] <- map[x[hit]]
    x
  }
  rename_names <- function(x) {
    if (!is.null(names(x))) names(x) <- swap(names(x))
    x
  }
  symbols <- function(e) {
    if (is.name(e)) {
      name <- as.character(e)
      if (name %in% from) as.name(map[[name]]) else e
    } else if (is.call(e)) {
      for (i in seq_along(e)) e[[i]] <- symbols(e[[i]])
      e
    } else {
      e
    }
  }
  imp$data <- rename_names(imp$data)
  imp$imp <- rename_names(imp$imp)
  colnames(imp$where) <- swap(colnames(imp$where))
  for (i in seq_along(imp$blocks)) imp$blocks[[i]] <- swap(imp$blocks[[i]])
  imp$blocks <- rename_names(imp$blocks)
  imp$nmis <- rename_names(imp$nmis)
  imp$method <- rename_names(imp$method)
  imp$fip_method <- rename_names(imp$fip_method)
  dimnames(imp$predictorMatrix) <- lapply(dimnames(imp$predictorMatrix), swap)
  imp$visitSequence <- swap(imp$visitSequence)
  for (i in seq_along(imp$formulas)) imp$formulas[[i]] <- symbols(imp$formulas[[i]])
  imp$formulas <- rename_names(imp$formulas)
  imp$post <- rename_names(imp$post)
  imp$blots <- rename_names(imp$blots)
  for (field in c("chainMean", "chainVar")) {
    if (!is.null(imp[[field]])) dimnames(imp[[field]])[[1]] <- swap(dimnames(imp[[field]])[[1]])
  }
  if (is.data.frame(imp$loggedEvents)) {
    for (field in intersect(c("dep", "out"), names(imp$loggedEvents))) {
      imp$loggedEvents[[field]] <- swap(as.character(imp$loggedEvents[[field]]))
    }
  }
  imp
}
